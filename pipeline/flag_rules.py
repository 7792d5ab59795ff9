"""Lexicons and rules the flag stage reads from `models/` (each file says where it came from)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path

import polars as pl
import yaml

from pipeline.match_key import match_key, sound_key


@dataclass(frozen=True)
class Rule:
    name: str
    pattern: re.Pattern
    weight: float
    why: str


@dataclass(frozen=True)
class Lexicon:
    name: str
    weights: dict[str, float]
    # Terms also matched by how they sound (sound form -> term): only those whose sound no
    # ordinary word shares, so "傻币" finds 傻逼 but "出生" never finds 畜生.
    by_sound: dict[str, str] = field(default_factory=dict)

    @cached_property
    def _terms_longest_first(self) -> list[str]:
        # Longest terms first so that "臭不要脸" is reported rather than also "不要脸".
        return sorted(self.weights, key=lambda t: (-len(t), t))

    @cached_property
    def _sounds_longest_first(self) -> list[tuple[str, str]]:
        return sorted(self.by_sound.items(), key=lambda ft: (-len(ft[0]), ft[0]))

    def matches(self, key: str) -> list[tuple[str, float]]:
        """(term, weight) found in a matching key; a homophone spelling is reported as
        "term (as 'spelling')"."""
        found: list[tuple[str, float]] = []
        for term in self._terms_longest_first:
            if term in key and not any(term in f for f, _ in found):
                found.append((term, self.weights[term]))
        if self.by_sound:
            sound = sound_key(key)
            for form, term in self._sounds_longest_first:
                at = sound.find(form)
                if at >= 0 and not any(term in f for f, _ in found):
                    found.append((f"{term} (as '{key[at:at + len(form)]}')", self.weights[term]))
        return found

    def matches_many(self, keys: list[str]) -> list[list[tuple[str, float]]]:
        """`matches` of every key. Most comments match nothing, so an Aho-Corasick pass in polars
        (over the terms and their sound forms) picks the few that `matches` needs to look at."""
        if not keys or not self.weights:
            return [[] for _ in keys]
        hit = pl.Series(keys, dtype=pl.String).str.contains_any(list(self.weights))
        if self.by_sound:
            sounds = pl.Series([sound_key(k) for k in keys], dtype=pl.String)
            hit = hit | sounds.str.contains_any(list(self.by_sound))
        return [self.matches(k) if h else [] for k, h in zip(keys, hit.to_list())]


# jieba gives its rarest entries frequency 3; from 10 up a word is something people really write.
COMMON_WORD_MIN_FREQ = 10


@lru_cache(maxsize=1)
def common_word_sounds() -> dict[str, set[str]]:
    """Sound form -> the ordinary words of jieba's dictionary that sound like it."""
    import jieba

    sounds: dict[str, set[str]] = {}
    path = Path(jieba.__file__).parent / "dict.txt"
    for line in path.read_text(encoding="utf-8").splitlines():
        word, freq, *_ = line.split(" ")
        if len(word) >= 2 and int(freq) >= COMMON_WORD_MIN_FREQ:
            sounds.setdefault(sound_key(word), set()).add(word)
    return sounds


def sound_safe(term: str, same_meaning: set[str]) -> bool:
    """A term may be matched by sound when it has 2+ Chinese characters and no dictionary word
    outside the lexicon sounds the same (白痴 ~ 白吃 and 畜生 ~ 出生 are not safe)."""
    if len(term) < 2 or not all("\u4e00" <= ch <= "\u9fff" for ch in term):
        return False
    return not (common_word_sounds().get(sound_key(term), set()) - same_meaning)


def load_lexicon(path: Path, match_by_sound: bool = False) -> Lexicon:
    weights: dict[str, float] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        term, _, weight = line.partition("\t")
        try:
            # Terms are matched against matching keys, so they are written in that form too.
            weights[match_key(term.strip())] = float(weight) if weight.strip() else 1.0
        except ValueError:
            raise ValueError(f"{path}:{n}: expected 'term<TAB>weight', got {line!r}") from None
    by_sound: dict[str, str] = {}
    if match_by_sound:  # several spellings may share a sound: report the surest term
        for t in sorted(weights, key=lambda t: (-weights[t], t)):
            if sound_safe(t, set(weights)):
                by_sound.setdefault(sound_key(t), t)
    return Lexicon(path.stem, weights, by_sound)


def rule_matches(rules: list[Rule], keys: list[str]) -> list[list[tuple[Rule, str]]]:
    """(rule, matched span) of every rule that matches each key, in rule order.

    Each rule first scans all keys at once with polars' regex engine; Python's `re` then confirms
    the hits and finds the span. Patterns polars cannot compile (look-arounds) run in Python."""
    found: list[list[tuple[Rule, str]]] = [[] for _ in keys]
    if not keys:
        return found
    series = pl.Series(keys, dtype=pl.String)
    for rule in rules:
        try:
            candidates = series.str.contains(rule.pattern.pattern).arg_true().to_list()
        except pl.exceptions.ComputeError:
            candidates = range(len(keys))
        for i in candidates:
            if m := rule.pattern.search(keys[i]):
                found[i].append((rule, m.group(0)))
    return found


def load_rules(path: Path) -> list[Rule]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    rules = []
    for i, r in enumerate(data["rules"]):
        try:
            rules.append(Rule(r["name"], re.compile(r["pattern"]), float(r["weight"]), r.get("why", "")))
        except (KeyError, re.error) as e:
            raise ValueError(f"{path}: rule #{i + 1} is invalid ({e})") from None
    return rules


def noisy_or(weights: list[float]) -> float:
    p = 1.0
    for w in weights:
        p *= 1.0 - w
    return 1.0 - p

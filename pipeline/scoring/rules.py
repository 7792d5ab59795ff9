"""Lexicons and rules the flag stage reads from `models/` (each file says where it came from)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path

import polars as pl
import yaml

from pipeline.text.match_key import match_key, sound_key


@dataclass(frozen=True)
class Rule:
    name: str
    pattern: re.Pattern
    weight: float
    why: str
    # A match is void where this also matches the same key: the context that makes the words
    # ordinary (a question, a police report, a warning about impostors).
    unless: re.Pattern | None = None


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

    @cached_property
    def _phrases_to_hide(self) -> list[str]:
        return [t for t in self._terms_longest_first if self.weights[t] <= 0]

    def matches(self, key: str) -> list[tuple[str, float]]:
        """(term, weight) found in a matching key; a homophone spelling is reported as
        "term (as 'spelling')". A term of weight 0 is an ordinary phrase that contains a listed
        term ("一棒子打死" holds 棒子): where it occurs, nothing inside it matches."""
        for phrase in self._phrases_to_hide:
            key = key.replace(phrase, " " * len(phrase))  # matching keys have no spaces
        found: list[tuple[str, float]] = []
        for term in self._terms_longest_first:
            if self.weights[term] > 0 and term in key and not any(term in f for f, _ in found):
                found.append((term, self.weights[term]))
        if self.by_sound:
            sound = sound_key(key)
            for form, term in self._sounds_longest_first:
                if any(term in f for f, _ in found):
                    continue
                at = sound.find(form)
                while at >= 0 and (
                    splits_a_word(key, at, at + len(form), self.weights) or swaps_in_a_function_word(key[at : at + len(form)], term)
                ):
                    at = sound.find(form, at + 1)
                # A spelling that is itself a listed term (尼玛) already counted once as written.
                if at >= 0 and key[at : at + len(form)] not in self.weights:
                    found.append((f"{term} (as '{key[at : at + len(form)]}')", self.weights[term]))
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


# Pronouns, particles and measure words people write all the time: a spelling that puts one of them
# where the term has another character is ordinary text, not a dodge ("你个" is not 尼哥, "啊三" after
# a mention is not 阿三). Dodges swap in rarer characters (傻比, 煞笔, 黑桂).
FUNCTION_CHARS = frozenset("你我他她它的地得了是个啊呀吧呢吗在有不也就都和这那一么哦哈")


def swaps_in_a_function_word(spelling: str, term: str) -> bool:
    return len(spelling) == len(term) and any(a != b and a in FUNCTION_CHARS for a, b in zip(spelling, term))


# jieba gives its rarest entries frequency 3; from 10 up a word is something people really write.
COMMON_WORD_MIN_FREQ = 10
# A sound match is dropped when a word at least this common runs across its edge ("自己|老百姓"
# sounds like 基佬 in its middle). At 10, rare entries such as 比才 (Bizet) also dropped the real
# dodge "沙比才信"; at 100 the drops on COLD dev and the project's sets were all spurious.
SPLIT_WORD_MIN_FREQ = 100


@lru_cache(maxsize=1)
def jieba_word_freqs() -> dict[str, int]:
    """Frequency of each word of 2+ characters in jieba's dictionary (read once per process)."""
    import jieba

    freqs = {}
    for line in (Path(jieba.__file__).parent / "dict.txt").read_text(encoding="utf-8").splitlines():
        word, freq, *_ = line.split(" ")
        if len(word) >= 2:
            freqs[word] = int(freq)
    return freqs


@lru_cache(maxsize=2)
def jieba_words(min_freq: int) -> frozenset[str]:
    """The words of 2+ characters in jieba's dictionary with at least this frequency."""
    return frozenset(w for w, f in jieba_word_freqs().items() if f >= min_freq)


@lru_cache(maxsize=1)
def common_word_sounds() -> dict[str, set[str]]:
    """Sound form -> the ordinary words of jieba's dictionary that sound like it."""
    sounds: dict[str, set[str]] = {}
    for word in jieba_words(COMMON_WORD_MIN_FREQ):
        sounds.setdefault(sound_key(word), set()).add(word)
    return sounds


def splits_a_word(key: str, start: int, end: int, lexicon_terms) -> bool:
    """True when a common word (not itself a lexicon term) runs across an edge of key[start:end]:
    the span is then the tail of one word and the head of the next, not a word someone wrote to
    sound like a slur ("人要" in "男人要", "己老" in "自己老百姓")."""
    words = jieba_words(SPLIT_WORD_MIN_FREQ)
    for edge in (start, end):
        for a in range(max(0, edge - 3), edge):
            for b in range(edge + 1, min(len(key), a + 4) + 1):
                if key[a:b] in words and key[a:b] not in lexicon_terms:
                    return True
    return False


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
            value = float(weight) if weight.strip() else 1.0
        except ValueError:
            raise ValueError(f"{path}:{n}: expected 'term<TAB>weight', got {line!r}") from None
        key = match_key(term.strip())
        if len(key) < 2:
            # Keys fold repeats, so "绿绿" would become "绿" and match every "绿色" and "绿灯".
            raise ValueError(
                f"{path}:{n}: {term.strip()!r} matches as {key!r}, a single character that ordinary words contain; write a longer term"
            )
        weights[key] = value
    by_sound: dict[str, str] = {}
    if match_by_sound:  # several spellings may share a sound: report the surest term
        for t in sorted(weights, key=lambda t: (-weights[t], t)):
            if weights[t] > 0 and sound_safe(t, set(weights)):
                by_sound.setdefault(sound_key(t), t)
    return Lexicon(path.stem, weights, by_sound)


LOOKAROUND_OPENERS = ("(?=", "(?!", "(?<=", "(?<!")


@lru_cache(maxsize=512)
def without_lookarounds(pattern: str) -> str:
    """The pattern with every look-around group removed: it matches wherever the pattern does."""
    out, i, n = [], 0, len(pattern)
    while i < n:
        if pattern[i] == "\\":
            out.append(pattern[i : i + 2])
            i += 2
        elif pattern[i] == "[":
            end = _class_end(pattern, i)
            out.append(pattern[i:end])
            i = end
        elif pattern.startswith(LOOKAROUND_OPENERS, i):
            i = _group_end(pattern, i)
        else:
            out.append(pattern[i])
            i += 1
    return "".join(out)


def _class_end(pattern: str, i: int) -> int:
    j = i + 1
    if j < len(pattern) and pattern[j] == "^":
        j += 1
    if j < len(pattern) and pattern[j] == "]":
        j += 1  # a ] first in a class is a literal
    while j < len(pattern) and pattern[j] != "]":
        j += 2 if pattern[j] == "\\" else 1
    return j + 1


def _group_end(pattern: str, i: int) -> int:
    depth, j = 0, i
    while j < len(pattern):
        c = pattern[j]
        if c == "\\":
            j += 2
            continue
        if c == "[":
            j = _class_end(pattern, j)
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return j + 1
        j += 1
    return j


@lru_cache(maxsize=512)
def polars_can_scan(pattern: str) -> bool:
    try:
        pl.Series([""], dtype=pl.String).str.contains(without_lookarounds(pattern))
        return True
    except pl.exceptions.ComputeError:
        return False


def rule_matches(rules: list[Rule], keys: list[str]) -> list[list[tuple[Rule, str]]]:
    """(rule, matched span) of every rule that matches each key, in rule order.

    Each rule first scans all keys at once with polars' regex engine; Python's `re` then confirms
    the hits and finds the span. Polars' engine has no look-arounds: it scans with them taken out
    (which can only find more), and Python's `re` keeps the true matches."""
    found: list[list[tuple[Rule, str]]] = [[] for _ in keys]
    if not keys:
        return found
    frame = pl.DataFrame({"key": keys}, schema={"key": pl.String})
    scans = {f"r{j}": without_lookarounds(r.pattern.pattern) for j, r in enumerate(rules) if polars_can_scan(r.pattern.pattern)}
    # One select scans every rule in parallel; a select per rule costs more than its scan on a few
    # hundred keys.
    hits = frame.select([pl.col("key").str.contains(p).alias(name) for name, p in scans.items()]) if scans else None
    for j, rule in enumerate(rules):
        candidates = hits[f"r{j}"].arg_true().to_list() if f"r{j}" in scans else range(len(keys))
        for i in candidates:
            if (m := rule.pattern.search(keys[i])) and not (rule.unless and rule.unless.search(keys[i])):
                found[i].append((rule, m.group(0)))
    return found


def load_rules(path: Path) -> list[Rule]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    rules = []
    for i, r in enumerate(data["rules"]):
        try:
            rules.append(
                Rule(
                    r["name"],
                    re.compile(r["pattern"]),
                    float(r["weight"]),
                    r.get("why", ""),
                    re.compile(r["unless"]) if r.get("unless") else None,
                )
            )
        except (KeyError, re.error) as e:
            raise ValueError(f"{path}: rule #{i + 1} is invalid ({e})") from None
    return rules


def noisy_or(weights: list[float]) -> float:
    p = 1.0
    for w in weights:
        p *= 1.0 - w
    return 1.0 - p


@lru_cache(maxsize=4)
def conspiracy_rules(models_dir: Path):
    # Apart from load_resources: training the conspiracy model needs the rules before it exists.
    return load_rules(models_dir / "rules" / "conspiracy.yaml")


def rule_scores(texts_norm: list[str], models_dir: Path) -> list[dict]:
    """The conspiracy rules alone: their noisy-OR score and the rules that matched."""
    hits = rule_matches(conspiracy_rules(models_dir), [match_key(t) for t in texts_norm])
    return [rule_row(h) for h in hits]


def rule_row(hits: list) -> dict:
    return {
        "score_conspiracy": noisy_or([r.weight for r, _ in hits]),
        "evidence_conspiracy": [f"rule {r.name} '{span}'" for r, span in hits],
    }

"""Lexicons and rules the flag stage reads from `models/` (each file says where it came from)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from pipeline.match_key import match_key


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

    def matches(self, key: str) -> list[tuple[str, float]]:
        # Longest terms first so that "臭不要脸" is reported rather than also "不要脸".
        found: list[tuple[str, float]] = []
        for term in sorted(self.weights, key=lambda t: (-len(t), t)):
            if term in key and not any(term in f for f, _ in found):
                found.append((term, self.weights[term]))
        return found


def load_lexicon(path: Path) -> Lexicon:
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
    return Lexicon(path.stem, weights)


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

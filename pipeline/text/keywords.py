"""c-TF-IDF keywords over jieba tokens (BERTopic's class-based TF-IDF, with Chinese tokens)."""

from __future__ import annotations

import math
import re
from collections import Counter
from functools import lru_cache
from pathlib import Path

STOPWORDS_FILE = Path(__file__).resolve().parents[1] / "resources" / "stopwords_zh.txt"
# A keyword must hold a CJK character or a latin word of 2+ letters: no punctuation, no digits-only.
WORDLIKE = re.compile(r"[\u4e00-\u9fff]|[A-Za-z]{2,}")
# Numeral + measure-word phrases jieba keeps as words ("一下子", "一部分", "这一点"): filler, not topics.
NUMERAL_FILLER = re.compile(r"^[一二两三几每这那哪某各]{1,2}[个下声部些点种次位件条份句回遍把只张块层批群样般切起定阵番][子分]?$")


@lru_cache(maxsize=1)
def stopwords() -> frozenset[str]:
    words = set()
    for line in STOPWORDS_FILE.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            words.update(line.split())
    return frozenset(words)


@lru_cache(maxsize=1)
def _jieba():
    import logging

    import jieba

    jieba.setLogLevel(logging.WARNING)  # its "Building prefix dict" lines are noise to our users
    return jieba


def tokens(text: str) -> list[str]:
    stop = stopwords()
    return [
        w.lower()
        for w in _jieba().lcut(text)
        if len(w.strip()) > 1 and w not in stop and WORDLIKE.search(w) and not w.isdigit() and not NUMERAL_FILLER.match(w)
    ]


def ctfidf(docs_by_class: dict[int, list[str]], top_n: int) -> dict[int, list[tuple[str, float]]]:
    """Per class: the top_n (word, weight) by tf(word, class) * log(1 + A / f(word)),
    with tf normalised by class length and A the average number of words per class."""
    counts = {c: Counter(w for d in docs for w in tokens(d)) for c, docs in docs_by_class.items()}
    total = Counter()
    for cnt in counts.values():
        total.update(cnt)
    avg_words = sum(total.values()) / max(1, len(counts))
    out = {}
    for c, cnt in counts.items():
        size = sum(cnt.values()) or 1
        scored = [(w, (n / size) * math.log(1 + avg_words / total[w])) for w, n in cnt.items()]
        # A word said once in a topic is an accident of wording: words said twice or more rank first.
        scored.sort(key=lambda x: (cnt[x[0]] < 2, -x[1], x[0]))
        out[c] = [(w, round(s, 6)) for w, s in scored[:top_n]]
    return out

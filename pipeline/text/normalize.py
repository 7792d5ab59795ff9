"""Text normalisation shared by ingest, flags and training.

`normalize_text` makes the `text_norm` column: the form every later stage (embedding, dedup, topics,
flags) reads. The original `text` is never changed.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from pathlib import Path

# Weibo/UC-style emoji tags: "[点赞]", "[得瑟]". Short, CJK or ASCII word inside square brackets.
EMOJI_TAG = re.compile(r"\[([\u4e00-\u9fffA-Za-z0-9_]{1,8})\]")
# Zero-width and bidi marks that platforms insert to dodge filters; they carry no meaning.
INVISIBLE = re.compile("[\u200b-\u200f\u2060-\u2064\ufeff\u00ad\u202a-\u202e]")
WHITESPACE = re.compile(r"\s+")
# Control characters other than ordinary whitespace (those are folded into spaces first).
CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


@lru_cache(maxsize=1)
def _t2s():
    from opencc import OpenCC

    return OpenCC("t2s")


@lru_cache(maxsize=1)
def _traditional() -> re.Pattern:
    """Matches any text OpenCC's t2s would change: a character with a simplified form, or one of
    the few phrases it rewrites although they hold no such character (瞭解 -> 了解). OpenCC in
    Python costs ~55 us a comment; most comments are already simplified and skip it."""
    import opencc

    folder = Path(opencc.__file__).parent / "dictionary"

    def changed(name: str) -> list[str]:
        pairs = (line.split("\t", 1) for line in (folder / name).read_text(encoding="utf-8").splitlines() if "\t" in line)
        return [k for k, v in pairs if v.split(" ")[0] != k]  # OpenCC takes the first candidate

    chars = set(changed("TSCharacters.txt"))
    phrases = [p for p in changed("TSPhrases.txt") if not set(p) & chars]
    return re.compile("[" + re.escape("".join(sorted(chars))) + "]|" + "|".join(map(re.escape, phrases)))


def to_simplified(text: str) -> str:
    return _t2s().convert(text) if _traditional().search(text) else text


def emoji_tags(text: str) -> list[str]:
    """The emoji tags in a comment, in order, without brackets ("[点赞][点赞]" -> ["点赞", "点赞"])."""
    return EMOJI_TAG.findall(text)


def normalize_text(text: str) -> str:
    """NFKC (full-width letters and digits to ASCII), traditional -> simplified, invisible and
    control characters removed, emoji tags removed, whitespace collapsed to one space and trimmed.

    A comment made only of emoji tags keeps the tag words ("[点赞]" -> "点赞"), so that it still says
    something to the embedding model and to dedup.
    """
    s = unicodedata.normalize("NFKC", text)
    s = INVISIBLE.sub("", s)
    s = CONTROL.sub(" ", s)
    s = to_simplified(s)
    without_tags = EMOJI_TAG.sub(" ", s)
    if without_tags.strip():
        s = without_tags
    else:
        s = EMOJI_TAG.sub(r"\1 ", s)
    return WHITESPACE.sub(" ", s).strip()

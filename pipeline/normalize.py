"""Text normalisation shared by ingest, flags and training.

`normalize_text` makes the `text_norm` column: the form every later stage (embedding, dedup, topics,
flags) reads. The original `text` is never changed.
"""
from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

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
    s = _t2s().convert(s)
    without_tags = EMOJI_TAG.sub(" ", s)
    if without_tags.strip():
        s = without_tags
    else:
        s = EMOJI_TAG.sub(r"\1 ", s)
    return WHITESPACE.sub(" ", s).strip()

"""Exact character n-gram Jaccard of matching keys: what verifies a MinHash candidate pair.

Exact, by sorting (pair, n-gram) codes packed into one uint64 (numpy's sort is vectorised;
argsort, lexsort and numpy 2.4's hash-based np.unique are many times slower). The n-gram codes are
minhash.py's, so both agree on what an n-gram is.
"""

from __future__ import annotations

import numpy as np

from pipeline.text.minhash import _distinct_ngrams, _offsets, _segments, _sorted_unique

_JACCARD_CHUNK_PAIRS = 1 << 16


def _distinct_objects(strings: list[str]) -> tuple[list[str], np.ndarray]:
    """The distinct string objects (by identity) and each entry's index among them.

    Candidate lists repeat the same key objects many times; id() needs no hashing or string reads,
    so this is several times faster than a dict. Equal strings in different objects only cost a
    repeated n-gram extraction, never a wrong result.
    """
    ids = np.fromiter(map(id, strings), dtype=np.uint64, count=len(strings))
    uniq = _sorted_unique(ids)
    inverse = np.searchsorted(uniq, ids)
    first = np.empty(len(uniq), dtype=np.int64)
    first[inverse] = np.arange(len(strings), dtype=np.int64)  # any occurrence: they are one object
    return [strings[i] for i in first.tolist()], inverse


def _python_jaccard(keys_a: list[str], keys_b: list[str], n: int) -> np.ndarray:
    def grams(key: str) -> set[str]:
        return {key[i : i + n] for i in range(max(1, len(key) - n + 1))}

    out = np.empty(len(keys_a), dtype=np.float64)
    for t, (x, y) in enumerate(zip(keys_a, keys_b)):
        gx, gy = grams(x), grams(y)
        out[t] = len(gx & gy) / len(gx | gy)
    return out


def _indexed_jaccard(strings: list[str], ia: np.ndarray, ib: np.ndarray, n: int) -> np.ndarray:
    """Exact Jaccard of strings[ia[t]] and strings[ib[t]] for every t."""
    out = np.empty(len(ia), dtype=np.float64)
    if not len(ia):
        return out
    distinct = _distinct_ngrams(strings, n)
    if distinct is None:
        return _python_jaccard([strings[i] for i in ia.tolist()], [strings[i] for i in ib.tolist()], n)
    codes, counts, gram_bits, _ = distinct
    offsets = _offsets(counts)
    step = min(_JACCARD_CHUNK_PAIRS, 1 << (64 - gram_bits))
    for lo in range(0, len(ia), step):
        hi = min(len(ia), lo + step)
        pa, la = _segments(offsets, ia[lo:hi])
        pb, lb = _segments(offsets, ib[lo:hi])
        pair = np.arange(hi - lo, dtype=np.uint64)
        merged = np.concatenate(
            [(np.repeat(pair, la) << np.uint64(gram_bits)) | codes[pa], (np.repeat(pair, lb) << np.uint64(gram_bits)) | codes[pb]]
        )
        merged.sort()
        # Each key's n-grams are distinct, so an equal neighbour is an n-gram both keys have.
        both = merged[1:][merged[1:] == merged[:-1]]
        inter = np.bincount((both >> np.uint64(gram_bits)).astype(np.int64), minlength=hi - lo)
        out[lo:hi] = inter / (la + lb - inter)
    return out


def jaccard(keys_a: list[str], keys_b: list[str], n: int) -> np.ndarray:
    """Exact Jaccard of the n-gram sets of keys_a[i] and keys_b[i], float64, one per i.

    Equal to len(A & B) / len(A | B) on Python sets of n-grams (a key shorter than n: its one
    n-gram is the whole key). Each distinct key object is broken into n-grams once. For candidate
    pairs prefer `pair_jaccard`: lists of millions of strings cost seconds to build and to read.
    """
    if len(keys_a) != len(keys_b):
        raise ValueError("keys_a and keys_b must have the same length")
    if n < 1:
        raise ValueError("n must be >= 1")
    strings, inverse = _distinct_objects(keys_a + keys_b)
    return _indexed_jaccard(strings, inverse[: len(keys_a)], inverse[len(keys_a) :], n)


def pair_jaccard(keys_a: list[str], pairs: np.ndarray, n: int, keys_b: list[str] | None = None) -> np.ndarray:
    """jaccard([keys_a[i] for i, _ in pairs], [keys_b[j] for _, j in pairs], n) without building
    those lists; keys_b defaults to keys_a. `pairs` is candidate_pairs' output."""
    if n < 1:
        raise ValueError("n must be >= 1")
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    strings = keys_a if keys_b is None else keys_a + keys_b
    ia, ib = pairs[:, 0], pairs[:, 1] + (0 if keys_b is None else len(keys_a))
    # Only the keys that occur in a pair are broken into n-grams.
    used = np.zeros(len(strings), dtype=np.bool_)
    used[ia] = True
    used[ib] = True
    rank = np.cumsum(used) - 1
    return _indexed_jaccard([strings[i] for i in np.flatnonzero(used).tolist()], rank[ia], rank[ib], n)

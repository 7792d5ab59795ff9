"""Dedup: exact and near-duplicate groups, bounded against a representative.

1. Each `text_norm` gets a matching key: lower case, no whitespace, punctuation, symbols or emoji,
   runs of one repeated character cut to two. Texts that normalise to nothing keep a lighter key.
2. Identical keys are one group. Keys of at least `min_chars` characters get a MinHash of their
   character `shingle_size`-grams; LSH proposes candidate pairs; a pair counts only when the exact
   n-gram Jaccard is at least `min_jaccard`.
3. Groups are stars, not chains: keys are visited most-frequent first; an unassigned key becomes a
   representative and takes the unassigned keys verified against *it*. So every member is within
   `min_jaccard` of its representative (plain union-find lets A~B~C~D drift arbitrarily far).
`dup_group` is a hash of the representative's key: the same comments get the same id in any order.
"""
from __future__ import annotations

import re
import unicodedata
from collections import Counter

import polars as pl
import xxhash
from datasketch import MinHash, MinHashLSH

from pipeline.config import DedupConfig
from pipeline.stage import Stage, StageContext

REPEATS = re.compile(r"(.)\1{2,}")


def match_key(text_norm: str) -> str:
    s = "".join(ch for ch in text_norm.lower()
                if not ch.isspace() and unicodedata.category(ch)[0] not in "PSZC")
    s = REPEATS.sub(r"\1\1", s)
    # Emoji- or punctuation-only comments still need a group: fall back to exact lighter matching.
    return s if s else "\0" + "".join(text_norm.split())


def shingles(key: str, n: int) -> set[str]:
    return {key[i:i + n] for i in range(max(1, len(key) - n + 1))}


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def group_keys(keys: list[str], counts: Counter, cfg: DedupConfig, seed: int) -> dict[str, str]:
    """Map every distinct key to its representative key."""
    long_keys = [k for k in keys if len(k) >= cfg.min_chars and not k.startswith("\0")]
    grams = {k: shingles(k, cfg.shingle_size) for k in long_keys}
    neighbours: dict[str, set[str]] = {k: set() for k in keys}
    if len(long_keys) > 1:
        sets = [[g.encode("utf-8") for g in grams[k]] for k in long_keys]
        signatures = MinHash.bulk(sets, num_perm=cfg.num_perm, seed=seed)
        lsh = MinHashLSH(threshold=cfg.lsh_threshold, num_perm=cfg.num_perm)
        for i, sig in enumerate(signatures):
            lsh.insert(i, sig)
        for i, sig in enumerate(signatures):
            for j in lsh.query(sig):
                if j > i and jaccard(grams[long_keys[i]], grams[long_keys[j]]) >= cfg.min_jaccard:
                    neighbours[long_keys[i]].add(long_keys[j])
                    neighbours[long_keys[j]].add(long_keys[i])
    order = sorted(keys, key=lambda k: (-counts[k], -len(neighbours[k]), k))
    rep_of: dict[str, str] = {}
    for k in order:
        if k in rep_of:
            continue
        rep_of[k] = k
        for other in sorted(neighbours[k]):
            if other not in rep_of:
                rep_of[other] = k
    return rep_of


def run(table: pl.DataFrame, cfg: DedupConfig, ctx: StageContext) -> pl.DataFrame:
    keys = [match_key(t) for t in table["text_norm"].to_list()]
    counts = Counter(keys)
    rep_of = group_keys(sorted(counts), counts, cfg, ctx.seed)
    rep_keys = [rep_of[k] for k in keys]
    table = table.with_columns(
        pl.Series("dedup_key", keys, dtype=pl.String),
        pl.Series("dup_group", [f"g{xxhash.xxh3_64_hexdigest(r.encode('utf-8'))[:12]}" for r in rep_keys],
                  dtype=pl.String),
    )
    # The representative comment is the first in input order whose key is the representative key.
    is_rep_text = pl.Series(rep_keys) == pl.Series(keys)
    first_rep = (table.with_columns(is_rep_text.alias("_rep"))
                 .filter("_rep").group_by("dup_group", maintain_order=True)
                 .agg(pl.col("comment_id").first().alias("dup_rep_id")))
    table = table.join(first_rep, on="dup_group", how="left", maintain_order="left")
    table = table.with_columns(
        pl.len().over("dup_group").cast(pl.Int64).alias("dup_group_size"),
        (pl.col("comment_id") == pl.col("dup_rep_id")).alias("is_dup_rep"),
    )
    ctx.facts.update(dup_groups=table["dup_group"].n_unique(),
                     rows_in_multi_groups=int((table["dup_group_size"] > 1).sum()))
    return table


STAGE = Stage(name="dedup", version="1", config_section="dedup", requires=("comment_id", "text_norm"),
              adds=("dup_group", "dup_group_size", "dup_rep_id", "is_dup_rep"), run=run)

"""Benchmark the dedup stage on a real corpus, optionally with evasive copies planted in it.

    python benchmarks/dedup.py --input ../shared/bench/weibo_checked_comments.parquet [--rows N]
        [--evasions 2000] [--pairs 30] [--set dedup.min_jaccard=0.7]

Prints one JSON line: rows, distinct texts and keys, seconds for normalising (ingest's job,
reported apart) and for the dedup stage, peak RSS in MB, groups of size >= 2, comments in them,
the largest groups, and with --evasions the share of planted (original, evasive copy) pairs that
ended in one group. --pairs N prints N random joined pairs to stderr to read for false joins.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.config import load_config  # noqa: E402
from pipeline.stage import StageContext  # noqa: E402
from pipeline.stages import dedup  # noqa: E402
from pipeline.text.normalize import normalize_text  # noqa: E402

EMOJI = "😀😂🙂👍💢🔥❤️✨"
PUNCT = "!！。,，~…?？、·"
TRADITIONAL = str.maketrans("说这个们来时对会为国学发经动过还没样开么问", "說這個們來時對會為國學發經動過還沒樣開麼問")
HOMOPHONE = str.maketrans("的了是在有我你他这", "滴啦事再有偶妳她這")


KINDS = ["substitute", "traditional", "spaces", "emoji", "punctuation", "fullwidth", "homophone"]


def evade(text: str, kind: str, rng: random.Random) -> str:
    """One evasive copy: the kinds of edits copy-paste campaigns make to slip past filters."""
    chars = list(text)
    if kind == "substitute":
        i = rng.randrange(len(chars))
        chars[i] = rng.choice("的了是一不在有人这个上们来到")
        return "".join(chars)
    if kind == "traditional":
        return text.translate(TRADITIONAL)
    if kind == "spaces":
        return " ".join(chars)
    if kind == "emoji":
        for _ in range(2):
            chars.insert(rng.randrange(len(chars) + 1), rng.choice(EMOJI))
        return "".join(chars)
    if kind == "punctuation":
        for _ in range(3):
            chars.insert(rng.randrange(len(chars) + 1), rng.choice(PUNCT))
        return "".join(chars)
    if kind == "fullwidth":
        return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text) + "！"
    return text.translate(HOMOPHONE)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--input", type=Path, required=True)
    p.add_argument("--rows", type=int)
    p.add_argument("--text-column", default="text")
    p.add_argument("--evasions", type=int, default=0, help="plant this many evasive copies of sampled comments")
    p.add_argument("--pairs", type=int, default=0, help="print this many random joined pairs to stderr")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    args = p.parse_args()
    cfg = load_config(None, args.overrides)

    texts = pl.read_parquet(args.input, columns=[args.text_column], n_rows=args.rows)[args.text_column].fill_null("").to_list()
    rng = random.Random(0)
    planted = []
    if args.evasions:
        candidates = [i for i, t in enumerate(texts) if len(t) >= 12]
        for n, i in enumerate(rng.sample(candidates, args.evasions)):
            kind = KINDS[n % len(KINDS)]
            planted.append((i, len(texts), kind))
            texts.append(evade(texts[i], kind, rng))

    t0 = time.perf_counter()
    distinct = list(dict.fromkeys(texts))
    norm_of = {t: normalize_text(t) for t in distinct}
    norm = [norm_of[t] for t in texts]
    t_norm = time.perf_counter() - t0

    table = pl.DataFrame({"comment_id": [str(i) for i in range(len(texts))], "text_norm": norm}).with_row_index("input_index")
    ctx = StageContext(seed=cfg.run.seed, cache_dir=None, state_dir=None)
    t0 = time.perf_counter()
    out = dedup.run(table, cfg.dedup, ctx)
    t_dedup = time.perf_counter() - t0

    sizes = out.group_by("dup_group").agg(pl.len().alias("n"), pl.col("text_norm").first()).sort("n", descending=True)
    multi = sizes.filter(pl.col("n") >= 2)
    groups = out["dup_group"].to_list()
    result = {
        "rows": len(texts),
        "distinct_texts": len(distinct),
        "distinct_keys": out["dedup_key"].n_unique(),
        "normalise_seconds": round(t_norm, 1),
        "dedup_seconds": round(t_dedup, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "groups_2plus": multi.height,
        "comments_in_groups_2plus": int(multi["n"].sum()),
        "largest_groups": [[n, t[:30]] for n, t in multi.head(5).select("n", "text_norm").iter_rows()],
        "config": cfg.dedup.model_dump(),
    }
    if planted:
        result["evasive_pairs_joined"] = round(sum(groups[a] == groups[b] for a, b, _ in planted) / len(planted), 4)
        result["evasive_pairs_joined_by_kind"] = {
            k: round(sum(groups[a] == groups[b] for a, b, kk in planted if kk == k) / sum(kk == k for *_, kk in planted), 3) for k in KINDS
        }
    print(json.dumps(result, ensure_ascii=False))

    if args.pairs:
        # Joined pairs whose texts differ: a member against its group's representative text.
        joined = (
            out.filter(pl.col("dup_group_size") >= 2)
            .join(out.filter("is_dup_rep").select("dup_group", pl.col("text_norm").alias("rep_text")), on="dup_group")
            .filter(pl.col("text_norm") != pl.col("rep_text"))
        )
        for member, rep in joined.sample(min(args.pairs, joined.height), seed=0).select("text_norm", "rep_text").iter_rows():
            print(f"{rep}\t<->\t{member}", file=sys.stderr)


if __name__ == "__main__":
    main()

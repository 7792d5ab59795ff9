"""Draw the real-comment development sample from ../shared/bench/weibo_ced_comments.parquet.

Run once; its output (comment ids and strata, no text) is the list that was hand-labelled into
benchmarks/data/weibo_ced_labels.csv. Rerunning it with the same seed and the same flag models
gives the same rows; the flagged stratum depends on the flag models of the commit that drew it
(recorded in the output's `drawn_with` column).

Threads, not rows, are split (the corpus's threads hold many near-copies):
- `holdout` threads (1 in 4 by a hash of the thread id) are never labelled: the queue-share check
  on an unlabelled stream (benchmarks/real_flags.py --queue-share) reads only them;
- the rest are split by another hash into `dev` (choosing thresholds, weights, priors) and
  `test` (reported once; its errors are not read while choosing).

Strata, each drawn with a fixed seed, without repeating a comment_id:
- `random`: rows at random (what a stream looks like: most are clean);
- `vocab`: rows matching conspiracy or offence vocabulary (hard negatives live here);
- `flagged`: rows the pipeline at the drawing commit flagged, from a random pool;
- `vocab_conspiracy`: rows matching the narrower vocabulary of conspiracy claims and their
  debunkings (claims are about 1 in 200 random rows; this stratum gives the flag enough of them).

    python benchmarks/real_sample.py --out /tmp/real_sample.csv
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import polars as pl
import xxhash

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CORPUS = ROOT.parent / "shared" / "bench" / "weibo_ced_comments.parquet"

# Vocabulary that conspiracy claims and offence use, and that their hard negatives share
# (debunking, asking, reporting). Written from the category definitions, not from the corpus.
VOCAB = re.compile(
    "阴谋|背后|幕后|黑手|操控|操纵|控制|资本|势力|美国|日本|西方|境外|外国|故意|安排|策划|设计好|"
    "真相|隐瞒|掩盖|封锁|内幕|黑幕|炒作|水军|五毛|美分|带节奏|自导自演|演戏|剧本|洗钱|收割|"
    "病毒|实验室|生化|疫苗|转基因|辐射|人口|秘密|政府|官方|谣言|造谣|辟谣|谁信|信吗|骗|"
    "傻|逼|脑残|狗|滚|死|贱|婊|猪|垃圾|畜生|废物|白痴|蠢|妈的|操|艹|尼玛|你妈|汉奸|走狗|卖国|"
    "黑人|鬼子|小日本|棒子|阿三|娘们|女人|男人|基佬|穆斯林|河南|东北|外地"
)


# Narrower: the words conspiracy claims (and their debunkings) are made of. Conspiracy claims are
# rare in a stream (about 1 in 200 here), so a stratum of their vocabulary gives the flag enough
# positives and hard negatives to be measured.
CONSPIRACY_VOCAB = re.compile(
    "阴谋|背后|幕后|黑手|操控|操纵|势力|资本|故意|安排好|策划|自导自演|剧本|演戏|真相|隐瞒|掩盖|封锁|"
    "内幕|黑幕|水军|五毛|美分|带节奏|洗钱|收割|实验室|生化|疫苗|转基因|人口|秘密|中情局|cia|共济会|"
    "美国人|美帝|西方|境外|有人(故意|想|要)|目的|利益集团|既得利益|被和谐|删帖|维稳"
)


def thread_bucket(thread_id: str, salt: str, mod: int) -> int:
    return xxhash.xxh64_intdigest(f"{salt}:{thread_id}".encode()) % mod


def split_of(thread_id: str) -> str:
    if thread_bucket(thread_id, "holdout", 4) == 0:
        return "holdout"
    return "test" if thread_bucket(thread_id, "devtest", 10) < 3 else "dev"


def commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def flagged_pool(pool: pl.DataFrame) -> pl.DataFrame:
    """The rows of `pool` that the flag stage (default config, no embeddings needed) flags."""
    from pipeline.config import Config
    from pipeline.scoring import score as scoring
    from pipeline.text.normalize import normalize_text

    cfg = Config().flag
    norm = [normalize_text(t) for t in pool["text"].to_list()]
    distinct = list(dict.fromkeys(norm))
    scored = dict(zip(distinct, scoring.score_texts(distinct, None, cfg)))
    hit = [any(scored[t][f"score_{c}"] >= getattr(cfg, f"threshold_{c}") for c in scoring.CATEGORIES) for t in norm]
    return pool.filter(pl.Series(hit))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--random", type=int, default=800)
    ap.add_argument("--vocab", type=int, default=700)
    ap.add_argument("--flagged", type=int, default=600)
    ap.add_argument("--flag-pool", type=int, default=8000, help="random rows scored to find flagged ones")
    ap.add_argument("--conspiracy-vocab", type=int, default=600)
    ap.add_argument("--seed", type=int, default=20261202)
    args = ap.parse_args()

    df = pl.read_parquet(CORPUS, columns=["comment_id", "thread_id", "text"])
    df = df.with_columns(pl.col("thread_id").map_elements(split_of, return_dtype=pl.String).alias("split"))
    df = df.filter((pl.col("split") != "holdout") & pl.col("text").is_not_null() & (pl.col("text").str.strip_chars().str.len_chars() > 0))
    taken: list[pl.DataFrame] = []
    rnd = df.sample(args.random, seed=args.seed).with_columns(pl.lit("random").alias("stratum"))
    taken.append(rnd)
    rest = df.filter(~pl.col("comment_id").is_in(rnd["comment_id"].implode()))
    # Distinct texts in the other strata: a repeated slogan labelled twice teaches nothing new.
    vocab = (
        rest.filter(pl.col("text").str.contains(VOCAB.pattern))
        .unique("text", keep="first", maintain_order=True)
        .sample(args.vocab, seed=args.seed + 1)
        .with_columns(pl.lit("vocab").alias("stratum"))
    )
    taken.append(vocab)
    rest = rest.filter(~pl.col("comment_id").is_in(vocab["comment_id"].implode()) & ~pl.col("text").is_in(vocab["text"].implode()))
    pool = rest.unique("text", keep="first", maintain_order=True).sample(args.flag_pool, seed=args.seed + 2)
    flagged = flagged_pool(pool)
    print(f"flagged pool: {flagged.height} of {pool.height} rows flagged", file=sys.stderr)
    flagged = flagged.sample(min(args.flagged, flagged.height), seed=args.seed + 3).with_columns(pl.lit("flagged").alias("stratum"))
    taken.append(flagged)
    # Drawn after the first three (added once their labels showed ~1 conspiracy claim in 200 rows),
    # so the earlier strata are unchanged by it.
    rest = rest.filter(~pl.col("comment_id").is_in(flagged["comment_id"].implode()) & ~pl.col("text").is_in(flagged["text"].implode()))
    cvocab = (
        rest.filter(pl.col("text").str.to_lowercase().str.contains(CONSPIRACY_VOCAB.pattern))
        .unique("text", keep="first", maintain_order=True)
        .sample(args.conspiracy_vocab, seed=args.seed + 4)
        .with_columns(pl.lit("vocab_conspiracy").alias("stratum"))
    )
    taken.append(cvocab)
    out = pl.concat(taken).with_columns(pl.lit(commit()).alias("drawn_with"))
    out.select("comment_id", "thread_id", "split", "stratum", "drawn_with", "text").write_csv(args.out)
    counts = {f"{stratum}_{split}": n for stratum, split, n in out.group_by("stratum", "split").len().sort("stratum", "split").rows()}
    print(json.dumps({"rows": out.height, **counts}, ensure_ascii=False))


if __name__ == "__main__":
    main()

"""Check that the hand-written training sets hold no copy of a benchmark corpus comment.

    python benchmarks/written_overlap.py [--drop]

The Weibo corpora in ../shared/bench have no licence: nothing trained on their text may ship. A
written row whose matching key (pipeline.text.match_key: case, spacing, punctuation, look-alikes and
repeats folded) equals a corpus comment's key is a copy, whether typed from it or met by chance
("转发微博"); one that the dedup stage puts in the same near-duplicate group as a weibo_ced comment
(the corpus the real labelled set comes from) is a near-copy. A third test is stricter, for the
comments developers have read: a row whose character bigrams overlap a hand-labelled real comment's
(benchmarks/data/weibo_ced_labels.csv) by Jaccard >= 0.6, or contain 60% of them, may echo it
through a brief's example. It prints, per own set, how many rows fail each test (short generic
phrases of 1-4 characters counted apart), and with --drop removes every failing row from the
2026-12 sets' files, keeping the rest in order. One JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BENCH = ROOT.parent / "shared" / "bench"
CORPORA = {"weibo_ced": BENCH / "weibo_ced_comments.parquet", "weibo_checked": BENCH / "weibo_checked_comments.parquet"}
# Sets written in 2026-12 whose briefs could have carried corpus wording: their copies are dropped.
DROPPABLE = ("conspiracy_genres.csv", "offence_hard.csv", "everyday_register.csv", "conspiracy_registers.csv")


def corpus_keys() -> set[str]:
    from pipeline.text.match_key import match_key
    from pipeline.text.normalize import normalize_text

    keys: set[str] = set()
    for path in CORPORA.values():
        texts = pl.read_parquet(path, columns=["text"])["text"].drop_nulls().unique().to_list()
        keys.update(match_key(normalize_text(t)) for t in texts)
    return keys


def near_copies(own_texts: list[str]) -> set[str]:
    """Own texts that the dedup stage groups with a weibo_ced comment."""
    from pipeline.config import DedupConfig
    from pipeline.stage import StageContext
    from pipeline.stages import dedup
    from pipeline.text.normalize import normalize_text

    corpus = pl.read_parquet(CORPORA["weibo_ced"], columns=["text"])["text"].drop_nulls().unique().to_list()
    norm = [normalize_text(t) for t in corpus] + own_texts
    table = pl.DataFrame(
        {
            "comment_id": [f"c{i}" for i in range(len(corpus))] + [f"own{i}" for i in range(len(own_texts))],
            "text_norm": norm,
            "input_index": list(range(len(norm))),
        }
    )
    ctx = StageContext(seed=0, cache_dir=None, state_dir=None, progress=False)
    out = dedup.run(table, DedupConfig(), ctx)
    corpus_groups = set(out.filter(pl.col("comment_id").str.starts_with("c"))["dup_group"].to_list())
    own = out.filter(pl.col("comment_id").str.starts_with("own") & pl.col("dup_group").is_in(list(corpus_groups)))
    return set(own["text_norm"].to_list())


READ_SIMILARITY = 0.6


def bigrams(key: str) -> set[str]:
    return {key[i : i + 2] for i in range(len(key) - 1)}


def like_labelled(own_keys: list[str]) -> list[bool]:
    """Whether each own key resembles a hand-labelled real comment (the ones developers read)."""
    from collections import defaultdict

    from pipeline.text.match_key import match_key
    from pipeline.text.normalize import normalize_text

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from real_flags import labelled

    real = [bigrams(match_key(normalize_text(t))) for t in labelled(["dev", "test"])["text"].to_list()]
    index = defaultdict(set)
    for i, g in enumerate(real):
        for b in g:
            index[b].add(i)
    out = []
    for key in own_keys:
        g = bigrams(key)
        score = 0.0
        for j in set().union(*(index[b] for b in g if b in index)) if len(g) >= 2 else ():
            inter, small = len(g & real[j]), min(len(g), len(real[j]))
            score = max(score, inter / len(g | real[j]), inter / small if small >= 4 else 0.0)
        out.append(score >= READ_SIMILARITY)
    return out


def main() -> None:
    from pipeline.config import OWN_LABELLED_SETS
    from pipeline.text.match_key import match_key
    from pipeline.text.normalize import normalize_text

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--drop", action="store_true", help="remove the copies from the 2026-12 sets")
    args = ap.parse_args()
    keys = corpus_keys()
    frames = {path: pl.read_csv(path, infer_schema_length=0) for path in OWN_LABELLED_SETS}
    near = near_copies([normalize_text(t) for df in frames.values() for t in df["text"].to_list()])
    report = {}
    for path, df in frames.items():
        norm = [normalize_text(t) for t in df["text"].to_list()]
        own = [match_key(t) for t in norm]
        corpus_copy = pl.Series([k in keys or t in near for k, t in zip(own, norm)])
        read = pl.Series(like_labelled(own))
        copy = corpus_copy | read
        short = pl.Series([len(k) <= 4 for k in own])
        report[path.name] = {
            "rows": df.height,
            "corpus_copies": int(corpus_copy.sum()),
            "corpus_copies_of_1_to_4_chars": int((corpus_copy & short).sum()),
            "like_a_labelled_real_comment": int(read.sum()),
        }
        if args.drop and path.name in DROPPABLE and copy.any():
            tmp = path.with_name(f".{path.name}.tmp")
            df.filter(~copy).write_csv(tmp)
            tmp.replace(path)
            report[path.name]["dropped"] = int(copy.sum())
    print(json.dumps(report, ensure_ascii=False))


if __name__ == "__main__":
    main()

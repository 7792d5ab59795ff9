"""The spam flag on the written spam sets: precision, recall, F1 and the share of hard negatives flagged.

    python benchmarks/spam.py --split dev [--errors]    # spam_dev.csv: the rows the rules were tuned on
    python benchmarks/spam.py --split test              # spam_test.csv: written apart, never tuned on
    python benchmarks/spam.py --real                    # real Weibo comments: flag rates, precision of read flags

`--real` scores all of ../shared/bench/weibo_ced_comments.parquet: the share flagged, the share of a
seeded random 20,000, and the precision over the flags read by hand in benchmarks/data/spam_flags_read.csv
(comment ids and labels only; the text is joined from ../shared). Those labels were read after the rules
were tuned on an earlier reading of that corpus's flags: a dev figure, not an unseen one.

Scores come from the flag stage's own code (pipeline/scoring/score.py) with the default config's
threshold_spam, so what is measured is what a run flags. Prints one JSON line; `--errors` (dev only)
lists the misses and false flags.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import PROJECT_ROOT, load_config  # noqa: E402
from pipeline.scoring.score import models_dir_of  # noqa: E402
from pipeline.scoring.spam import spam_scores  # noqa: E402
from pipeline.text.normalize import normalize_text  # noqa: E402

SETS = {
    "dev": "spam_dev.csv",
    "dev2": "spam_dev2.csv",
    "dev3": "spam_dev3.csv",
    "dev4": "spam_dev4.csv",
    "dev5": "spam_dev5.csv",
    "dev7": "spam_dev7.csv",
    "test": "spam_test.csv",
}


def measure(split: str, threshold: float | None = None) -> tuple[dict, pl.DataFrame]:
    cfg = load_config().flag
    threshold = cfg.threshold_spam if threshold is None else threshold
    rows = pl.read_csv(PROJECT_ROOT / "pipeline" / "training" / "data" / SETS[split])
    scored = spam_scores([normalize_text(t) for t in rows["text"].to_list()], models_dir_of(cfg))
    rows = rows.with_columns(
        pl.Series("score", [s for s, _ in scored]), pl.Series("evidence", [e for _, e in scored], dtype=pl.List(pl.String))
    ).with_columns((pl.col("score") >= threshold).alias("flag"))
    tp = rows.filter(pl.col("flag") & (pl.col("label") == 1)).height
    fp = rows.filter(pl.col("flag") & (pl.col("label") == 0)).height
    fn = rows.filter(~pl.col("flag") & (pl.col("label") == 1)).height
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    by_kind = rows.group_by("kind").agg(pl.col("flag").mean().round(3)).sort("kind")
    result = {
        "split": split,
        "rows": rows.height,
        "spam": int((rows["label"] == 1).sum()),
        "threshold": threshold,
        "precision": round(precision, 3),
        "recall": round(recall, 3),
        "f1": round(2 * precision * recall / (precision + recall), 3) if precision + recall else 0.0,
        "hard_negatives_flagged": round(rows.filter(pl.col("kind") == "hard_negative")["flag"].mean(), 3),
        "ordinary_flagged": round(rows.filter(pl.col("kind") == "ordinary")["flag"].mean(), 3),
        "flag_rate_by_kind": dict(by_kind.iter_rows()),
    }
    return result, rows


def measure_real(threshold: float | None = None, sample: int = 20000) -> dict:
    cfg = load_config().flag
    threshold = cfg.threshold_spam if threshold is None else threshold
    path = PROJECT_ROOT.parent / "shared" / "bench" / "weibo_ced_comments.parquet"
    if not path.exists():
        raise SystemExit(f"{path} is missing: --real needs ../shared (the Weibo corpus)")
    corpus = pl.read_parquet(path, columns=["comment_id", "text"]).with_columns(pl.col("text").fill_null(""))
    scored = spam_scores([normalize_text(t) for t in corpus["text"].to_list()], models_dir_of(cfg))
    corpus = corpus.with_columns(pl.Series("flag", [s >= threshold for s, _ in scored]))
    read = pl.read_csv(Path(__file__).parent / "data" / "spam_flags_read.csv", schema_overrides={"comment_id": pl.String})
    flags = corpus.filter("flag").join(read, on="comment_id", how="left")
    judged = flags.filter(pl.col("spam").is_not_null())
    random_rows = corpus.sample(n=min(sample, corpus.height), seed=25)
    return {
        "corpus": path.name,
        "rows": corpus.height,
        "flagged": flags.height,
        "flag_rate": round(flags.height / corpus.height, 6),
        "random_sample": random_rows.height,
        "random_flagged": int(random_rows["flag"].sum()),
        "flags_read": judged.height,
        "flags_unread": flags.height - judged.height,
        "precision_of_read_flags": round(judged["spam"].mean(), 3) if judged.height else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", choices=sorted(SETS), default="dev")
    parser.add_argument("--threshold", type=float, default=None, help="default: the config's flag.threshold_spam")
    parser.add_argument("--errors", action="store_true", help="list misses and false flags (dev split only)")
    parser.add_argument("--real", action="store_true", help="real Weibo comments instead of a written set")
    args = parser.parse_args()
    if args.real:
        print(json.dumps(measure_real(args.threshold), ensure_ascii=False))
        return
    if args.errors and args.split.startswith("test"):
        parser.error("--errors reads the dev split only: the test split's errors stay unread until a report")
    result, rows = measure(args.split, args.threshold)
    if args.errors:
        wrong = rows.filter(pl.col("flag") != (pl.col("label") == 1))
        for r in wrong.iter_rows(named=True):
            print(
                f"{'MISS' if r['label'] else 'FALSE'} {r['id']} {r['kind']} {r['score']:.2f} {r['text']}  | {r['evidence']}",
                file=sys.stderr,
            )
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()

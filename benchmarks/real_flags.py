"""The flags on real Weibo comments: hand labels of benchmarks/data/weibo_ced_labels.csv joined with
their text from ../shared/bench/weibo_ced_comments.parquet at run time (the corpus has no licence:
the repository keeps ids and labels only).

    python benchmarks/real_flags.py --split dev [--set flag.threshold_conspiracy=0.6]
    python benchmarks/real_flags.py --split dev --sweep          # thresholds: P/R/F1 and clean flagged
    python benchmarks/real_flags.py --queue-share 20000          # unlabelled holdout threads: queue share

The `dev` split chooses thresholds, weights and priors; `test` is read once, to report. Prints a
table per stratum on stderr and one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
CORPUS = ROOT.parent / "shared" / "bench" / "weibo_ced_comments.parquet"
LABELS = ROOT / "benchmarks" / "data" / "weibo_ced_labels.csv"
CATEGORIES = ("abuse", "hate", "conspiracy")
TRUTH = {"abuse": "abusive", "hate": "hate", "conspiracy": "conspiracy"}


def labelled(splits: list[str]) -> pl.DataFrame:
    if not CORPUS.exists():
        sys.exit(f"{CORPUS} not found: this benchmark needs ../shared beside the project")
    labels = pl.read_csv(LABELS, schema_overrides={"comment_id": pl.String}).filter(pl.col("split").is_in(splits))
    text = pl.read_parquet(CORPUS, columns=["comment_id", "text"]).unique("comment_id", keep="first")
    out = labels.join(text, on="comment_id", how="left")
    missing = out["text"].null_count()
    if missing:
        sys.exit(f"{missing} labelled comment_ids are not in {CORPUS}")
    return out


def predict(table: pl.DataFrame, overrides: list[str]) -> pl.DataFrame:
    """The flag stage's output for these comments (ingest, embed, flag), default config + overrides."""
    from pipeline.config import load_config
    from pipeline.report.evaluate import predictions

    cfg = load_config(None, overrides)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "comments.parquet"
        table.select("comment_id", "text").write_parquet(path)
        pred = predictions([path], cfg)
    keep = ["comment_id", "needs_review"] + [f"{k}_{c}" for c in CATEGORIES for k in ("score", "flag", "evidence")]
    return table.drop("text").join(pred.select(keep), on="comment_id", how="left")


def metrics(df: pl.DataFrame) -> dict:
    from pipeline.report.evaluate import scores

    out = {}
    for c in CATEGORIES:
        out[c] = scores(df[TRUTH[c]].cast(pl.Boolean).to_list(), df[f"flag_{c}"].to_list())
    off_truth = (df["abusive"].cast(pl.Boolean) | df["hate"].cast(pl.Boolean)).to_list()
    out["offensive"] = scores(off_truth, (df["flag_abuse"] | df["flag_hate"]).to_list())
    clean = df.filter((pl.col("abusive") == 0) & (pl.col("hate") == 0) & (pl.col("conspiracy") == 0))
    out["clean_flagged"] = {
        "n": clean.height,
        **{c: round(float(clean[f"flag_{c}"].mean() or 0), 4) for c in CATEGORIES},
        "any": round(float(clean["needs_review"].mean() or 0), 4),
    }
    return out


def table_lines(name: str, m: dict) -> list[str]:
    lines = [f"[{name}] {'cat':<11}{'n':>6}{'pos':>5}{'flag':>6}{'prec':>7}{'rec':>7}{'f1':>7}"]
    for c in (*CATEGORIES, "offensive"):
        r = m[c]
        lines.append(
            f"[{name}] {c:<11}{r['n']:>6}{r['positives']:>5}{r['flagged']:>6}{r['precision']:>7.3f}{r['recall']:>7.3f}{r['f1']:>7.3f}"
        )
    cf = m["clean_flagged"]
    lines.append(f"[{name}] clean flagged of {cf['n']}: " + ", ".join(f"{c} {cf[c]:.1%}" for c in (*CATEGORIES, "any")))
    return lines


def sweep(df: pl.DataFrame) -> dict:
    """Per category and threshold: precision, recall, F1 and clean-flagged share (the chooser's view)."""
    out = {}
    clean = ((df["abusive"] == 0) & (df["hate"] == 0) & (df["conspiracy"] == 0)).to_numpy()
    for c in CATEGORIES:
        y = df[TRUTH[c]].to_numpy().astype(bool)
        s = df[f"score_{c}"].to_numpy()
        rows = []
        for t in np.round(np.arange(0.3, 0.96, 0.05), 2):
            pred = s >= t
            tp = int((pred & y).sum())
            p, r = tp / max(int(pred.sum()), 1), tp / max(int(y.sum()), 1)
            rows.append(
                {
                    "t": float(t),
                    "precision": round(p, 3),
                    "recall": round(r, 3),
                    "f1": round(2 * p * r / max(p + r, 1e-9), 3),
                    "clean_flagged": round(float(pred[clean].mean()), 4),
                }
            )
        out[c] = rows
    return out


def queue_share(n: int, overrides: list[str], seed: int) -> dict:
    """Share of an unlabelled stream that lands in the queue: n rows from the holdout threads."""
    from real_sample import split_of

    df = pl.read_parquet(CORPUS, columns=["comment_id", "thread_id", "text"])
    df = df.filter(pl.col("thread_id").map_elements(split_of, return_dtype=pl.String) == "holdout")
    df = df.sample(min(n, df.height), seed=seed)
    pred = predict(df, overrides)
    return {
        "rows": pred.height,
        "threads": df["thread_id"].n_unique(),
        **{f"share_{c}": round(float(pred[f"flag_{c}"].mean()), 4) for c in CATEGORIES},
        "share_needs_review": round(float(pred["needs_review"].mean()), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", action="append", choices=("dev", "test"), help="labelled split(s) to score (default dev)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--sweep", action="store_true", help="print thresholds' precision/recall/clean-flagged per category")
    ap.add_argument("--queue-share", type=int, default=0, metavar="N", help="score N unlabelled rows of the holdout threads instead")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--errors",
        type=Path,
        help="write the misflagged and missed rows (ids, labels, scores, evidence) here; never for the test split while choosing",
    )
    args = ap.parse_args()
    start = time.perf_counter()
    if args.queue_share:
        print(
            json.dumps(
                {
                    "queue_share": queue_share(args.queue_share, args.overrides, args.seed),
                    "overrides": args.overrides,
                    "seconds": round(time.perf_counter() - start, 1),
                },
                ensure_ascii=False,
            )
        )
        return
    splits = args.split or ["dev"]
    pred = predict(labelled(splits), args.overrides)
    result = {"splits": splits, "overrides": args.overrides, "all": metrics(pred)}
    lines = table_lines("all", result["all"])
    for stratum in sorted(pred["stratum"].unique().to_list()):
        result[stratum] = metrics(pred.filter(pl.col("stratum") == stratum))
        lines += table_lines(stratum, result[stratum])
    rnd = pred.filter(pl.col("stratum") == "random")
    if rnd.height:
        result["random_stream_queue_share"] = round(float(rnd["needs_review"].mean()), 4)
        lines.append(f"[random] share of a random stream in the queue: {result['random_stream_queue_share']:.1%}")
    if args.sweep:
        result["sweep"] = sweep(pred)
        for c, rows in result["sweep"].items():
            lines.append(
                f"sweep {c}: " + "  ".join(f"{r['t']:.2f}:{r['precision']:.2f}/{r['recall']:.2f}/{r['clean_flagged']:.1%}" for r in rows)
            )
    if args.errors:
        wrong = pred.filter(pl.any_horizontal([pl.col(f"flag_{c}") != (pl.col(TRUTH[c]) == 1) for c in CATEGORIES]))
        wrong.with_columns([pl.col(f"evidence_{c}").list.join(" | ") for c in CATEGORIES]).write_csv(args.errors)
    print("\n".join(lines), file=sys.stderr)
    result["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()

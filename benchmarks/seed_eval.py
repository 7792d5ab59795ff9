"""Compare a run's flags and duplicate groups with our labels for the seed thread.

    python benchmarks/seed_eval.py OUTPUT_DIR [--labels ../shared/eval/seed_labels.csv]

The run must be of the seed's 78 comments in order (as tools/check_contract.py writes them).
Prints one JSON line: per category labelled, flagged, true positives, precision, recall.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import polars as pl

LABEL_OF = {"abuse": "abusive", "hate": "hate", "conspiracy": "conspiracy"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--labels", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "eval" / "seed_labels.csv")
    args = parser.parse_args()
    labels = pl.read_csv(args.labels).sort("comment_no")
    run = pl.read_parquet(args.run_dir / "comments.parquet")
    if run.height != labels.height:
        raise SystemExit(f"{args.run_dir}: {run.height} rows, the labels have {labels.height}")
    out = {}
    for cat, col in LABEL_OF.items():
        truth = labels[col].cast(pl.Boolean).to_list()
        flagged = run[f"flag_{cat}"].to_list()
        tp = sum(t and f for t, f in zip(truth, flagged))
        out[cat] = {"labelled": sum(truth), "flagged": sum(flagged), "true_positives": tp,
                    "precision": round(tp / sum(flagged), 3) if sum(flagged) else None,
                    "recall": round(tp / sum(truth), 3) if sum(truth) else None,
                    "flagged_ids": [i + 1 for i, f in enumerate(flagged) if f],
                    "labelled_ids": [i + 1 for i, t in enumerate(truth) if t]}
    groups = labels["near_dup_group"].to_list()
    same = [run["dup_group"][i] for i, g in enumerate(groups) if g]
    out["near_dup_labelled_pairs_joined"] = len(set(same)) == 1 if same else None
    out["dup_groups"] = run["dup_group"].n_unique()
    print(json.dumps(out, ensure_ascii=False))


if __name__ == "__main__":
    main()

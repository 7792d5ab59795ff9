"""Choose the offence model and the abuse/hate thresholds, on the real dev split only.

    python benchmarks/choose_offence.py [--cold-rows 2000] [--model top4 --model extra-one-pass] [--set embed.runtime=torch]

For each offence model (flag.offence_model / offence_encoder: the top-4 encoder blend, the 'extra'
encoder blend, n-grams alone) and each pair of thresholds (threshold_abuse, threshold_hate), it
computes on the hand-labelled dev split of benchmarks/data/weibo_ced_labels.csv the offensive F1
(abusive or hate vs flag_abuse or flag_hate) and the share of clean comments flagged (all strata;
the random stratum: a stream's share), and COLD dev's macro-F1 (a seeded sample, rows whose
matching key is in COLD train left out). The chosen setting has the best real dev F1 among those
that flag at most --budget of the random stratum's clean comments and at most --hard-budget of all
clean ones, with COLD dev macro-F1 at least --cold-min; settings within --tie of that F1 count as
equal (about the noise of 330 positives) and the one with the best COLD dev macro-F1 among them
is chosen. Prints JSON lines, the chosen one last.
The test split is never read here.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from pipeline.metrics import precision_recall_f1  # noqa: E402

COLD = ROOT.parent / "shared" / "datasets" / "cold"
MODELS = {
    "top4": ["flag.offence_model=blend", "flag.offence_encoder=top4"],
    "extra": ["flag.offence_model=blend", "flag.offence_encoder=extra"],
    # The same encoder reading the embed stage's own token states: one transformer pass in all.
    "extra-one-pass": ["flag.offence_model=blend", "flag.offence_encoder=extra", "embed.offence_from_states=true"],
    "ngram": ["flag.offence_model=ngram"],
}
THRESHOLDS = np.round(np.arange(0.5, 0.96, 0.05), 2)


def cold_dev_sample(n: int, seed: int) -> pl.DataFrame:
    from pipeline.text.match_key import match_key
    from pipeline.text.normalize import normalize_text

    seen = {match_key(normalize_text(t)) for t in pl.read_csv(COLD / "train.csv", columns=["TEXT"])["TEXT"].to_list()}
    dev = pl.read_csv(COLD / "dev.csv", columns=["TEXT", "label"])
    keep = [match_key(normalize_text(t)) not in seen for t in dev["TEXT"].to_list()]
    dev = dev.filter(pl.Series(keep)).sample(min(n, sum(keep)), seed=seed)
    return pl.DataFrame(
        {
            "comment_id": [f"cold:{i}" for i in range(dev.height)],
            "text": dev["TEXT"],
            "abusive": dev["label"],
            "hate": pl.zeros(dev.height, pl.Int64, eager=True),
            "conspiracy": pl.zeros(dev.height, pl.Int64, eager=True),
            "stratum": ["cold"] * dev.height,
        }
    )


def f1(y: np.ndarray, pred: np.ndarray) -> float:
    return precision_recall_f1(y, pred)[2]


def main() -> None:
    from real_flags import labelled, predict

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=float, default=0.025, help="most clean comments of a random stream flagged abuse or hate")
    ap.add_argument("--hard-budget", type=float, default=0.07, help="most clean comments of all strata flagged abuse or hate")
    ap.add_argument("--cold-min", type=float, default=0.85, help="least COLD dev macro-F1")
    ap.add_argument("--cold-rows", type=int, default=2000)
    ap.add_argument("--tie", type=float, default=0.02, help="real dev F1 differences this small count as ties")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", action="append", choices=sorted(MODELS), help="offence models to compare (default all)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE", help="for every model")
    args = ap.parse_args()
    models = {name: MODELS[name] + args.overrides for name in (args.model or MODELS)}
    dev = labelled(["dev"])
    cold = cold_dev_sample(args.cold_rows, args.seed)
    y = ((dev["abusive"] == 1) | (dev["hate"] == 1)).to_numpy()
    clean = ((dev["abusive"] == 0) & (dev["hate"] == 0) & (dev["conspiracy"] == 0)).to_numpy()
    random_clean = clean & (dev["stratum"] == "random").to_numpy()
    yc = cold["abusive"].to_numpy() == 1
    rows = []
    for name, overrides in models.items():
        pred_dev = predict(dev, overrides)
        pred_cold = predict(cold, overrides)
        for ta, th in itertools.product(THRESHOLDS, THRESHOLDS):
            flagged = ((pred_dev["score_abuse"] >= ta) | (pred_dev["score_hate"] >= th)).to_numpy()
            flagged_c = ((pred_cold["score_abuse"] >= ta) | (pred_cold["score_hate"] >= th)).to_numpy()
            macro = (f1(yc, flagged_c) + f1(~yc, ~flagged_c)) / 2
            tp = int((flagged & y).sum())
            rows.append(
                {
                    "model": name,
                    "threshold_abuse": float(ta),
                    "threshold_hate": float(th),
                    "precision": round(tp / max(int(flagged.sum()), 1), 3),
                    "recall": round(tp / max(int(y.sum()), 1), 3),
                    "f1": round(f1(y, flagged), 3),
                    "clean_flagged": round(float(flagged[clean].mean()), 4),
                    "random_clean_flagged": round(float(flagged[random_clean].mean()), 4),
                    "cold_dev_macro_f1": round(macro, 4),
                }
            )
    within = [
        r
        for r in rows
        if r["random_clean_flagged"] <= args.budget and r["clean_flagged"] <= args.hard_budget and r["cold_dev_macro_f1"] >= args.cold_min
    ]
    for name in models:
        best = max((r for r in within if r["model"] == name), key=lambda r: (r["f1"], r["cold_dev_macro_f1"]), default=None)
        print(json.dumps({"best_of": name, **(best or {})}))
    top = max((r["f1"] for r in within), default=0.0)
    ranked = sorted((r for r in within if r["f1"] >= top - args.tie), key=lambda r: (r["cold_dev_macro_f1"], r["f1"]))
    print(
        json.dumps(
            {
                "chosen": ranked[-1] if ranked else None,
                "tie": args.tie,
                "dev_rows": dev.height,
                "cold_rows": cold.height,
                "budget": args.budget,
                "hard_budget": args.hard_budget,
                "cold_min": args.cold_min,
                "overrides": args.overrides,
            }
        )
    )


if __name__ == "__main__":
    main()

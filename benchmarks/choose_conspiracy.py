"""Choose how score_conspiracy combines its signals, on the real dev split only.

    python benchmarks/choose_conspiracy.py [--budget 0.01]

score_conspiracy = noisy-OR(rules, conspiracy_model_weight x head, conspiracy_ngram_weight x n-grams
recalibrated to conspiracy_ngram_prior). For every setting on a small grid and every threshold it
computes, on the hand-labelled dev split of benchmarks/data/weibo_ced_labels.csv, precision, recall,
F1 and the share of clean comments flagged (all strata, and the random stratum: a stream's share).
The chosen setting has the best real dev F1 among those that flag at most --budget of the real
random stratum's clean comments and at most 3x --budget of all real clean ones, and that keep F1 at
least --written-f1 on the written thread_dev.csv "test" threads (no model trains on them; read in
earlier rounds, so a dev set too): real streams decide what may flag, written text keeps the
models' recall on the genres real dev has too few of. Prints the best settings as JSON lines,
the chosen one last. The test split is never read here.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import polars as pl
from scipy.special import expit, logit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def components(df: pl.DataFrame) -> dict[str, np.ndarray]:
    """Each conspiracy signal of the shipped models for the dev rows (rules, head, raw n-gram p)."""
    from pipeline.config import Config
    from pipeline.runner import default_cache_dir
    from pipeline.scoring import score as scoring
    from pipeline.scoring.rules import rule_scores
    from pipeline.stage import StageContext
    from pipeline.stages import embed
    from pipeline.text.match_key import match_key
    from pipeline.text.normalize import normalize_text

    cfg = Config()
    norm = [normalize_text(t) for t in df["text"].to_list()]
    models_dir = scoring.models_dir_of(cfg.flag)
    res = scoring.load_resources(models_dir)
    ctx = StageContext(seed=0, cache_dir=default_cache_dir(cfg), state_dir=None, progress=False)
    vectors = embed.run(pl.DataFrame({"text_norm": norm}), cfg.embed, ctx)["embedding"].to_numpy().astype(np.float32)
    ngram = res["conspiracy_ngram"]
    return {
        "rules": np.array([r["score_conspiracy"] for r in rule_scores(norm, models_dir)]),
        "head": res["conspiracy_head"].predict_proba(vectors),
        "ngram": np.clip(ngram.predict_proba([match_key(t) for t in norm]), 1e-6, 1 - 1e-6),
        "ngram_rate": np.full(len(norm), ngram.train_positive_rate),
    }


def main() -> None:
    from real_flags import labelled

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=float, default=0.01, help="most clean comments of a random stream flagged")
    ap.add_argument("--written-f1", type=float, default=0.85, help="least F1 on the written held-out threads")
    args = ap.parse_args()
    df = labelled(["dev"])
    c = components(df)
    written = pl.read_csv(ROOT / "pipeline" / "training" / "data" / "thread_dev.csv", infer_schema_length=0).filter(
        pl.col("split") == "test"
    )
    cw = components(written)
    yw = written["conspiracy"].cast(pl.Int64).to_numpy() == 1
    y = df["conspiracy"].to_numpy() == 1
    clean = ((df["abusive"] == 0) & (df["hate"] == 0) & (df["conspiracy"] == 0)).to_numpy()
    random_clean = clean & (df["stratum"] == "random").to_numpy()
    rows = []
    for w_head, w_ngram, prior in itertools.product((0.0, 0.3, 0.5, 0.7, 0.85, 1.0), (0.0, 0.5, 1.0), (0.05, 0.1, 0.2)):
        if w_ngram == 0 and prior != 0.1:
            continue

        def combined(c, prior=prior, w_head=w_head, w_ngram=w_ngram):
            ng = expit(logit(c["ngram"]) + logit(prior) - logit(c["ngram_rate"]))
            return 1 - (1 - c["rules"]) * (1 - w_head * c["head"]) * (1 - w_ngram * ng)

        score, score_w = combined(c), combined(cw)
        for t in np.round(np.arange(0.3, 0.96, 0.025), 3):
            pred, pred_w = score >= t, score_w >= t
            tp_w = int((pred_w & yw).sum())
            pw, rw = tp_w / max(int(pred_w.sum()), 1), tp_w / max(int(yw.sum()), 1)
            tp = int((pred & y).sum())
            p, r = tp / max(int(pred.sum()), 1), tp / max(int(y.sum()), 1)
            rows.append(
                {
                    "conspiracy_model_weight": w_head,
                    "conspiracy_ngram_weight": w_ngram,
                    "conspiracy_ngram_prior": prior,
                    "threshold_conspiracy": float(t),
                    "precision": round(p, 3),
                    "recall": round(r, 3),
                    "f1": round(2 * p * r / max(p + r, 1e-9), 3),
                    "flagged": int(pred.sum()),
                    "clean_flagged": round(float(pred[clean].mean()), 4),
                    "random_clean_flagged": round(float(pred[random_clean].mean()), 4),
                    "written_f1": round(2 * pw * rw / max(pw + rw, 1e-9), 3),
                    "written_clean_flagged": round(float(pred_w[~yw].mean()), 4),
                }
            )
    within = [
        r
        for r in rows
        if r["random_clean_flagged"] <= args.budget and r["clean_flagged"] <= 3 * args.budget and r["written_f1"] >= args.written_f1
    ]
    # Ties: the higher threshold, then the simpler setting (less n-gram weight).
    ranked = sorted(within, key=lambda r: (r["f1"], r["written_f1"], r["threshold_conspiracy"], -r["conspiracy_ngram_weight"]))
    for r in ranked[-8:]:
        print(json.dumps(r))
    rules_alone = [
        r
        for r in rows
        if r["conspiracy_model_weight"] == 0
        and r["conspiracy_ngram_weight"] == 0
        and r["random_clean_flagged"] <= args.budget
        and r["clean_flagged"] <= 3 * args.budget
    ]
    print(json.dumps({"rules_alone_best": max(rules_alone, key=lambda r: r["f1"], default=None)}))
    print(
        json.dumps({"chosen": ranked[-1] if ranked else None, "dev_rows": df.height, "dev_positives": int(y.sum()), "budget": args.budget})
    )


if __name__ == "__main__":
    main()

"""Kind "extra" offence encoder (new layers on the frozen e5) on CPU: evaluate and time the shipped one.

    # COLD dev without train texts: alone, and blended with the n-gram model (LR, 5-fold CV)
    python benchmarks/offence_encoder_extra.py evaluate --cold ../shared/datasets/cold [--top4-dev .gpu/dev_cpu.npz]
    # logits_from_states against a full e5 encode of the same texts, 2 threads
    python benchmarks/offence_encoder_extra.py speed --cold ../shared/datasets/cold -n 2000

e5's token states are computed the way the embed stage computes them (sentence-transformers,
"query: " prompt, 256 tokens, batches of 64 sorted by length) and cached in --states-cache, shared
with `python -m pipeline.training.package_encoder extra` (which installed models/offence_encoder_extra/
from a pipeline/training/gpu_train.py run), so both pay for one e5 pass over COLD dev.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pipeline.config import PROJECT_ROOT  # noqa: E402
from pipeline.metrics import best_threshold, class_f1, macro_f1  # noqa: E402
from pipeline.models.offence_encoder import OffenceEncoder  # noqa: E402
from pipeline.training.offence_data import training_texts  # noqa: E402
from pipeline.training.package_encoder import BATCH, EXTRA_DIR, dev_states, load_st, logits_of, st_batches  # noqa: E402


def blend_cv(features: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 0) -> dict:
    """Logistic regression on the models' log-odds: weights fitted on all of dev, and the macro-F1
    (at p >= 0.5) of out-of-fold predictions."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    pred = np.zeros(len(y), int)
    for train_idx, test_idx in StratifiedKFold(folds, shuffle=True, random_state=seed).split(features, y):
        lr = LogisticRegression().fit(features[train_idx], y[train_idx])
        pred[test_idx] = lr.predict(features[test_idx])
    full = LogisticRegression().fit(features, y)
    return {
        "weights": [round(float(w), 3) for w in full.coef_[0]],
        "bias": round(float(full.intercept_[0]), 3),
        "cv_macro_f1": round(macro_f1(y, pred), 4),
    }


def evaluate(args) -> None:
    from scipy.special import logit

    from pipeline.models.offence_ngram import OffenceModel

    enc = OffenceEncoder.load(args.model)
    texts, y, batches = dev_states(args.cold, args.states_cache)
    extra = logits_of(enc.logits_from_states, batches, len(texts))
    ngram = OffenceModel.load(PROJECT_ROOT / "models" / "offence").decision_function(texts)
    p = 1 / (1 + np.exp(-extra))
    report = {
        "rows": len(texts),
        "extra_alone": {
            "threshold": enc.threshold,
            "macro_f1": round(macro_f1(y, (p >= enc.threshold).astype(int)), 4),
            "macro_f1_at_0.5": round(macro_f1(y, (p >= 0.5).astype(int)), 4),
        },
        "ngram_alone_at_0.5": round(macro_f1(y, (ngram >= 0).astype(int)), 4),
        "blend_extra_ngram": blend_cv(np.column_stack([extra, ngram]), y),
    }
    if args.top4_dev and args.top4_dev.exists():
        # The shipped top-4 encoder's CPU dev probabilities (and the n-gram model's), same rows
        ref = np.load(args.top4_dev)
        assert list(ref["x"]) == texts and np.array_equal(ref["y"], y), "top-4 dev file has other rows"
        top4 = logit(np.clip(ref["enc"].astype(np.float64), 1e-7, 1 - 1e-7))
        thr, f1 = best_threshold(y, ref["enc"])
        report["top4_alone"] = {"best_threshold": thr, "macro_f1": round(f1, 4)}
        report["blend_top4_ngram"] = blend_cv(np.column_stack([top4, ngram]), y)
        report["blend_top4_extra_ngram"] = blend_cv(np.column_stack([top4, extra, ngram]), y)
    if args.gpu_probs and args.gpu_probs.exists():
        probs = np.load(args.gpu_probs)
        name = enc.meta["training"]["command"].split("--variant ")[-1]
        key = f"{name}_own_heldout"
        if key in probs:
            own_y = probs["own_heldout_y"]
            report["own_heldout_at_threshold"] = round(macro_f1(own_y, (probs[key] >= enc.threshold).astype(int)), 4)
            report["own_heldout_offensive_f1"] = round(class_f1(own_y, probs[key] >= enc.threshold, 1), 4)
    print(json.dumps(report, indent=1))


def speed(args) -> None:
    torch.set_num_threads(args.threads)
    _, _, dev, _ = training_texts(args.cold, [])
    texts = [t for t, _ in dev][: args.n]
    st = load_st()
    enc = OffenceEncoder.load(args.model)
    batches = [(idx, s.clone(), m.clone()) for idx, s, m in st_batches(st, texts)]
    st.encode(texts[:64], prompt_name="query", batch_size=BATCH)  # warm-up
    runs = []
    for _ in range(args.repeats):  # interleaved, so both see the same machine load
        t0 = time.perf_counter()
        st.encode(texts, prompt_name="query", batch_size=BATCH, normalize_embeddings=True, convert_to_numpy=True)
        t_e5 = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _, states, mask in batches:
            enc.logits_from_states(states, mask)
        runs.append((t_e5, time.perf_counter() - t0))
    e5_s = min(r[0] for r in runs)
    extra_s = min(r[1] for r in runs)
    print(
        json.dumps(
            {
                "texts": len(texts),
                "threads": args.threads,
                "e5_encode_s": round(e5_s, 2),
                "logits_from_states_s": round(extra_s, 2),
                "ratio": round(extra_s / e5_s, 3),
                "e5_per_s": round(len(texts) / e5_s, 1),
                "extra_per_s": round(len(texts) / extra_s, 1),
                "runs": [[round(a, 2), round(b, 2)] for a, b in runs],
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("evaluate", "speed"):
        p = sub.add_parser(name)
        p.add_argument("--cold", type=Path, required=True)
        p.add_argument("--states-cache", type=Path, default=Path("/tmp/offence_extra_dev_states.pt"))
        p.add_argument("--model", type=Path, default=EXTRA_DIR)
        if name == "evaluate":
            p.add_argument("--top4-dev", type=Path, default=PROJECT_ROOT / ".gpu" / "dev_cpu.npz")
            p.add_argument("--gpu-probs", type=Path, default=PROJECT_ROOT / ".gpu" / "run_extra" / "dev_probs.npz")
        if name == "speed":
            p.add_argument("-n", type=int, default=2000)
            p.add_argument("--threads", type=int, default=2)
            p.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    {"evaluate": evaluate, "speed": speed}[args.cmd](args)


if __name__ == "__main__":
    main()

"""Fitting the offence blend: a logistic regression on the fine-tuned encoder's and the n-gram model's
log-odds, stored with the encoder (`blend_with_ngram` in its model.json) and read by the flag stage
(pipeline/scoring/score.py), which needs nothing from here.

It is fitted on two kinds of comments at once, each counting half: COLD dev (without the texts that
are also in train) and the held-out rows of the project's own sets (news-thread comments, where
offence is mostly contempt for a person). Fitted on COLD alone, it trusted the encoder's COLD habits
on news threads too.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy.special import logit

from pipeline.metrics import macro_f1
from pipeline.training.offence_data import own_rows, training_texts


def features(encoder, ngram, texts_norm: list[str]) -> np.ndarray:
    """(n, 2): the encoder's logit and the n-gram model's log-odds."""
    ngram_p = np.clip(ngram.predict_proba(texts_norm), 1e-6, 1 - 1e-6)
    return np.column_stack([encoder.logits(texts_norm), logit(ngram_p)])


def fit(parts: dict[str, tuple[np.ndarray, np.ndarray]], folds: int = 5, seed: int = 0) -> dict:
    """Weights and bias fitted on every part, each part weighted to count equally, and each part's
    out-of-fold macro-F1 at p >= 0.5 (the folds are stratified within each part)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    X = np.vstack([f for f, _ in parts.values()])
    y = np.concatenate([t for _, t in parts.values()])
    weight = np.concatenate([np.full(len(t), len(y) / (len(parts) * len(t))) for _, t in parts.values()])
    part_of = np.concatenate([np.full(len(t), i) for i, (_, t) in enumerate(parts.values())])
    pred = np.zeros(len(y), int)
    strata = part_of * 2 + y
    for train_idx, test_idx in StratifiedKFold(folds, shuffle=True, random_state=seed).split(X, strata):
        model = LogisticRegression().fit(X[train_idx], y[train_idx], sample_weight=weight[train_idx])
        pred[test_idx] = model.predict(X[test_idx])
    full = LogisticRegression().fit(X, y, sample_weight=weight)
    return {
        "encoder": round(float(full.coef_[0][0]), 3),
        "ngram": round(float(full.coef_[0][1]), 3),
        "bias": round(float(full.intercept_[0]), 3),
        "cv_macro_f1": {name: round(macro_f1(y[part_of == i], pred[part_of == i]), 4) for i, name in enumerate(parts)},
    }


def refit(encoder_dir: Path, ngram_dir: Path, cold_dir: Path, own_sets: list[Path], log=print) -> dict:
    """Refit the blend for the encoder in `encoder_dir` and write it into its model.json."""
    from pipeline.io.fileio import atomic_write_json
    from pipeline.models.offence_encoder import OffenceEncoder
    from pipeline.models.offence_ngram import OffenceModel

    encoder, ngram = OffenceEncoder.load(encoder_dir), OffenceModel.load(ngram_dir)
    _, _, cold_dev, _ = training_texts(cold_dir, [])
    heldout = own_rows(own_sets, "heldout")
    parts = {}
    for name, rows in (("cold_dev", cold_dev), ("own_heldout", heldout)):
        log(f"blend: scoring {len(rows)} {name} rows")
        parts[name] = (features(encoder, ngram, [t for t, _ in rows]), np.array([y for _, y in rows]))
    blend = fit(parts)
    blend["fitted"] = (
        f"logistic regression on COLD dev without train texts ({len(cold_dev)} rows) and the own sets' "
        f"held-out rows ({len(heldout)}), each counting half; 5-fold CV macro-F1 per part"
    )
    meta_path = encoder_dir / "model.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta["blend_with_ngram"] = blend
    atomic_write_json(meta, meta_path)
    return blend

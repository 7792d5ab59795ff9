"""Training the two conspiracy models (`train-flags`, `--conspiracy-only`): the head on the frozen e5
embeddings (models/conspiracy/, pipeline.models.conspiracy_model.ConspiracyHead) and the character
n-gram model (models/conspiracy_ngram/, in the offence n-gram model's format).

No public dataset labels conspiracy in Chinese, so both learn from the project's own hand-written
sets (config.OWN_LABELLED_SETS, among them `pipeline/training/data/conspiracy_genres.csv`: the genres
real platforms see, each with hard negatives that share its vocabulary). Their quality is estimated
by 5-fold cross-validation grouped by thread; `metrics` in head.json records precision and recall of
the rules, the model, and rules + weight x model. Their weights in the flag and the thresholds are
chosen on real comments (benchmarks/real_flags.py, dev split), never on the rows they learn from.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.io.fileio import replace_dir
from pipeline.metrics import precision_recall_f1
from pipeline.models.conspiracy_model import EXAMPLES_FILE, MODEL_FILE

C_GRID = (1.0, 3.0, 10.0, 30.0, 100.0)
# Moderators' budget: at most this share of clean comments flagged. The threshold is the one with
# the best F1 among those that stay within it on the out-of-fold predictions.
MAX_CLEAN_FLAGGED = 0.05
NGRAM_RANGE = (2, 3)  # no single characters: "早" or "是" alone is no evidence a moderator would accept


def _fit(x: np.ndarray, y: np.ndarray, C: float, seed: int):
    from sklearn.linear_model import LogisticRegression

    # e5 vectors sit close together, so weak regularisation is needed to spread the probabilities.
    return LogisticRegression(C=C, class_weight="balanced", max_iter=5000, random_state=seed).fit(x, y)


def own_rows(own_csvs: list[Path]) -> pl.DataFrame:
    """The own labelled sets' rows that may train: text, conspiracy label and a group per thread.

    A set's "test" split (thread_dev.csv) is left out. Rows of a set without a `thread` column are
    each their own group. Cross-validation splits by group: threads hold near-copies of one another,
    so splitting rows would score a model on paraphrases of its training rows."""
    frames = []
    for path in own_csvs:
        df = pl.read_csv(path, infer_schema_length=0)
        if "split" in df.columns:
            df = df.filter(pl.col("split") != "test")
        group = pl.col("thread") if "thread" in df.columns else pl.col("id")
        frames.append(df.select("text", pl.col("conspiracy").cast(pl.Int64), (pl.lit(path.stem + ":") + group).alias("group")))
    return pl.concat(frames)


def grouped_folds(y: np.ndarray, groups: list[str], seed: int, n: int = 5) -> list:
    from sklearn.model_selection import StratifiedGroupKFold

    return list(StratifiedGroupKFold(n, shuffle=True, random_state=seed).split(np.zeros(len(y)), y, groups))


def train(own_csvs: list[Path], out_dir: Path, seed: int = 0) -> dict:
    """Cross-validate grouped by thread, then fit on every row and write out_dir (atomically)."""
    from pipeline.config import Config
    from pipeline.models import embedder
    from pipeline.models.e5_model import default_cache_dir
    from pipeline.scoring.rules import rule_scores
    from pipeline.scoring.score import models_dir_of
    from pipeline.text.normalize import normalize_text

    start = time.perf_counter()
    data = own_rows(own_csvs)
    texts = [normalize_text(t) for t in data["text"].to_list()]
    y = data["conspiracy"].to_numpy()
    cfg = Config()
    # The embedding service the embed stage uses: the same vectors, without a stage around it.
    vectors = embedder.encode(embedder.load_model(cfg.embed, default_cache_dir(), progress=True), texts, cfg.embed)
    rules = np.array([r["score_conspiracy"] for r in rule_scores(texts, models_dir_of(cfg.flag))])

    folds = grouped_folds(y, data["group"].to_list(), seed)
    oof = {}
    for C in C_GRID:
        oof[C] = np.zeros(len(y))
        for train_idx, test_idx in folds:
            oof[C][test_idx] = _fit(vectors[train_idx], y[train_idx], C, seed).predict_proba(vectors[test_idx])[:, 1]
    grid = {C: _best_threshold(y, oof[C]) for C in C_GRID}
    C = max(C_GRID, key=lambda c: grid[c]["best"]["f1"])
    table = {
        "rules": _best_threshold(y, rules),
        "model": grid[C],
        **{f"rules+{w}*model": _best_threshold(y, 1 - (1 - rules) * (1 - w * oof[C])) for w in (0.5, 1.0)},
    }

    clf = _fit(vectors, y, C, seed)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    metrics = {
        "cross_validated_on": [p.name for p in own_csvs],
        "rows": len(y),
        "positives": int(y.sum()),
        "groups": data["group"].n_unique(),
        "folds": "5, grouped by thread (StratifiedGroupKFold)",
        "seed": seed,
        "C": C,
        "max_clean_flagged": MAX_CLEAN_FLAGGED,
        "by_signal": table,
        "grid_f1": {str(c): grid[c]["best"]["f1"] for c in C_GRID},
        "seconds": round(time.perf_counter() - start, 1),
    }
    meta = {
        "format_version": 1,
        "kind": "logistic regression on frozen e5 embeddings",
        "embed_model": embedder.model_id(cfg.embed),
        "coef": clf.coef_[0].tolist(),
        "intercept": float(clf.intercept_[0]),
        "train_positive_rate": round(float(y.mean()), 4),
        "metrics": metrics,
    }
    (tmp / MODEL_FILE).write_text(json.dumps(meta, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    positives = np.flatnonzero(y == 1)
    pl.DataFrame({"text": [data["text"][int(i)] for i in positives], "vector": vectors[positives]}).write_parquet(tmp / EXAMPLES_FILE)
    replace_dir(tmp, out_dir)
    return metrics


def _best_threshold(y: np.ndarray, score: np.ndarray) -> dict:
    """Precision, recall, F1 and clean-flagged share at 0.5, and at the F1-best threshold that
    flags at most MAX_CLEAN_FLAGGED of the clean comments."""

    def at(t: float) -> dict:
        pred = score >= t
        p, r, f1 = precision_recall_f1(y, pred)
        return {
            "threshold": round(float(t), 2),
            "precision": round(p, 3),
            "recall": round(r, 3),
            "f1": round(f1, 3),
            "clean_flagged": round(float((pred & (y == 0)).sum() / max(1, int((y == 0).sum()))), 3),
        }

    options = [at(t) for t in np.arange(0.30, 0.96, 0.025)]
    within = [m for m in options if m["clean_flagged"] <= MAX_CLEAN_FLAGGED] or options[-1:]
    return {"at_0.5": at(0.5), "best": max(within, key=lambda m: (m["f1"], m["threshold"]))}


def train_ngram(own_csvs: list[Path], out_dir: Path, seed: int = 0) -> dict:
    """Character 2-3-gram TF-IDF + logistic regression on the project's own labelled sets (every
    row but a "test" split; `conspiracy` column), in the offence model's file format.
    Cross-validated first (5 folds grouped by thread): the rules plus this model, recalibrated to
    a few priors, at threshold 0.5."""
    from scipy.special import expit, logit

    from pipeline.config import FlagConfig
    from pipeline.scoring.rules import rule_scores
    from pipeline.scoring.score import models_dir_of
    from pipeline.text.match_key import match_key
    from pipeline.text.normalize import normalize_text
    from pipeline.training import offence_ngram

    data = own_rows(own_csvs)
    norm = [normalize_text(t) for t in data["text"].to_list()]
    # It reads the matching key, like the rules: punctuation and spacing are no evidence of a claim.
    texts = [match_key(t) for t in norm]
    y = data["conspiracy"].to_numpy()
    rules = np.array([r["score_conspiracy"] for r in rule_scores(norm, models_dir_of(FlagConfig()))])
    oof = np.zeros(len(y))
    for tr, te in grouped_folds(y, data["group"].to_list(), seed):
        vec, clf = offence_ngram.fit_sklearn([texts[i] for i in tr], y[tr], ngram_range=NGRAM_RANGE, C=1.0, seed=seed)
        oof[te] = clf.predict_proba(vec.transform([texts[i] for i in te]))[:, 1]
    rate = float(y.mean())
    cv = {}
    for prior in (0.05, 0.1, 0.2, 0.3):
        p = expit(logit(np.clip(oof, 1e-6, 1 - 1e-6)) + logit(prior) - logit(rate))
        flagged = (1 - (1 - rules) * (1 - p)) >= 0.5
        prec, rec, f1 = precision_recall_f1(y, flagged)
        cv[str(prior)] = {
            "precision": round(prec, 3),
            "recall": round(rec, 3),
            "f1": round(f1, 3),
            "clean_flagged": round(float(flagged[y == 0].mean()), 4),
        }
    vec, clf = offence_ngram.fit_sklearn(texts, y, ngram_range=NGRAM_RANGE, C=1.0, seed=seed)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    offence_ngram.save_model(
        vec,
        clf,
        tmp,
        0.5,
        rate,
        predicts="probability that a comment is a conspiracy claim (input: pipeline.text.match_key.match_key of the normalised text)",
        training={
            "data": [p.name for p in own_csvs],
            "rows": len(y),
            "positives": int(y.sum()),
            "ngram_range": list(NGRAM_RANGE),
            "C": 1.0,
            "cross_validated": {"folds": "5, grouped by thread", "seed": seed, "rules_plus_model_by_prior": cv},
        },
    )
    replace_dir(tmp, out_dir)
    return {"rows": len(y), "positives": int(y.sum()), "cv_by_prior": cv}

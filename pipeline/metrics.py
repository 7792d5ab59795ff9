"""The F1 numbers and threshold choices that training and the benchmarks report (numpy only).

One copy for every model, so that a "macro-F1" in one model.json is the same number as in another.
`macro_f1` is sklearn's `f1_score(average="macro")` for 0/1 labels whenever both classes occur in
`y` (the same per-class 2tp / (2tp + fp + fn), averaged), without the import, so the GPU training
script (pipeline/training/gpu_train.py, torch only) can use it too.
"""

from __future__ import annotations

import numpy as np

# Thresholds tried by default: the fine-tuned encoders' grid.
GRID = np.round(np.arange(0.05, 0.951, 0.01), 2)


def class_f1(y: np.ndarray, pred: np.ndarray, cls: int = 1) -> float:
    """F1 of class `cls` (0/1 or bool arrays): 2tp / (2tp + fp + fn), 0 when the class is absent."""
    tp = np.sum((pred == cls) & (y == cls))
    fp = np.sum((pred == cls) & (y != cls))
    fn = np.sum((pred != cls) & (y == cls))
    return float(2 * tp / max(2 * tp + fp + fn, 1))


def macro_f1(y: np.ndarray, pred: np.ndarray) -> float:
    """Mean of the F1s of class 0 and class 1."""
    return float(np.mean([class_f1(y, pred, cls) for cls in (0, 1)]))


def macro_f1_at(y: np.ndarray, prob: np.ndarray, threshold: float) -> float:
    """`macro_f1` of predicting 1 where prob >= threshold."""
    return macro_f1(y, (prob >= threshold).astype(np.int64))


def best_threshold(y: np.ndarray, prob: np.ndarray, grid: np.ndarray = GRID, near: float | None = None) -> tuple[float, float]:
    """(threshold on `grid` with the best macro-F1, that macro-F1). Ties go to the lowest threshold,
    or, with `near`, to the one nearest `near` (scores within 1e-12 count as tied)."""
    scores = np.array([macro_f1_at(y, prob, t) for t in grid])
    if near is None:
        i = int(np.argmax(scores))
    else:
        tied = np.flatnonzero(scores >= scores.max() - 1e-12)
        i = int(tied[np.argmin(np.abs(grid[tied] - near))])
    return float(grid[i]), float(scores[i])


def precision_recall_f1(y: np.ndarray, pred: np.ndarray) -> tuple[float, float, float]:
    """Precision, recall and F1 of the positive class (label 1 / True); 0 where undefined."""
    y, pred = np.asarray(y) == 1, np.asarray(pred) == 1
    tp = int((pred & y).sum())
    precision, recall = tp / max(int(pred.sum()), 1), tp / max(int(y.sum()), 1)
    return precision, recall, 2 * precision * recall / max(precision + recall, 1e-9)

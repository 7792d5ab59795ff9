"""A small learned conspiracy detector, as the flag stage runs it: logistic regression on the frozen
e5 embeddings (`ConspiracyHead`). Training: pipeline/training/conspiracy.py.

No public dataset labels conspiracy in Chinese, so it learns from the project's own hand-written
sets (config.OWN_LABELLED_SETS, among them `pipeline/training/data/conspiracy_genres.csv`: the genres
real platforms see, each with hard negatives that share its vocabulary).

Saved as JSON (weights) and parquet (the conspiracy examples with their vectors, so a flag can
show the nearest labelled example); no pickle.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import polars as pl
from scipy.special import expit

MODEL_FILE, EXAMPLES_FILE = "head.json", "examples.parquet"


class ConspiracyHead:
    def __init__(
        self, coef: np.ndarray, intercept: float, embed_model: str, examples: list[str], example_vectors: np.ndarray, version: str
    ):
        self.coef, self.intercept, self.embed_model = coef, intercept, embed_model
        self.examples, self.example_vectors, self.version = examples, example_vectors, version

    @classmethod
    def load(cls, model_dir: Path) -> ConspiracyHead:
        raw = (model_dir / MODEL_FILE).read_bytes()
        meta = json.loads(raw)
        ex = pl.read_parquet(model_dir / EXAMPLES_FILE)
        return cls(
            np.asarray(meta["coef"], dtype=np.float64),
            float(meta["intercept"]),
            meta["embed_model"],
            ex["text"].to_list(),
            ex["vector"].to_numpy().astype(np.float32),
            hashlib.sha256(raw).hexdigest()[:12],
        )

    def predict_proba(self, vectors: np.ndarray) -> np.ndarray:
        return expit(vectors.astype(np.float64) @ self.coef + self.intercept)

    def nearest(self, vectors: np.ndarray, example_vectors: np.ndarray | None = None) -> tuple[list[str], np.ndarray]:
        """The most similar labelled conspiracy example of each vector, and its cosine.
        `example_vectors`: the examples embedded by the model that made `vectors`, when that is not
        the e5 model the head was trained with."""
        if len(vectors) == 0:
            return [], np.zeros(0, np.float32)
        sims = vectors @ (self.example_vectors if example_vectors is None else example_vectors).T
        best = sims.argmax(axis=1)
        return [self.examples[i] for i in best], sims[np.arange(len(vectors)), best]

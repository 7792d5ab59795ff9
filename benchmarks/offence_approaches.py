"""Offence approaches side by side on COLD dev (deduplicated against train).

    python benchmarks/offence_approaches.py [--cold ../shared/datasets/cold]

Scores the shipped char n-gram TF-IDF model, logistic regression on frozen e5 embeddings, and
their blends. Embeddings go through the pipeline's embedding cache: the first run encodes all of
COLD (about 12 minutes on 2 cores), later runs take seconds. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import polars as pl
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.config import Config  # noqa: E402
from pipeline.metrics import macro_f1_at  # noqa: E402
from pipeline.models.e5_model import default_cache_dir  # noqa: E402
from pipeline.models.offence_ngram import OffenceModel  # noqa: E402
from pipeline.stage import StageContext  # noqa: E402
from pipeline.stages import embed  # noqa: E402
from pipeline.text.match_key import match_key  # noqa: E402
from pipeline.text.normalize import normalize_text  # noqa: E402

PROJECT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--cold", type=Path, default=PROJECT.parent / "shared" / "datasets" / "cold")
    args = p.parse_args()
    train = pl.read_csv(args.cold / "train.csv")
    dev = pl.read_csv(args.cold / "dev.csv")
    train_texts = [normalize_text(t) for t in train["TEXT"].to_list()]
    # Near-copies of train rows out, by the dedup matching key (not only exact text).
    seen = {match_key(t) for t in train_texts}
    dev = dev.with_columns(pl.Series("norm", [normalize_text(t) for t in dev["TEXT"].to_list()]))
    dev = dev.filter(pl.Series([match_key(t) not in seen for t in dev["norm"].to_list()]))
    y_train, y_dev = train["label"].to_numpy(), dev["label"].to_numpy()

    cfg = Config()
    ctx = StageContext(seed=0, cache_dir=default_cache_dir(), state_dir=None, progress=True)

    def vectors(texts: list[str]) -> np.ndarray:
        return embed.run(pl.DataFrame({"text_norm": texts}), cfg.embed, ctx)["embedding"].to_numpy().astype(np.float32)

    x_train, x_dev = vectors(train_texts), vectors(dev["norm"].to_list())
    tfidf = OffenceModel.load(PROJECT / "models" / "offence").predict_proba(dev["norm"].to_list())

    def macro_f1(p: np.ndarray) -> float:
        return round(macro_f1_at(y_dev, p, 0.5), 4)

    result = {"dev_rows": int(len(y_dev)), "tfidf": macro_f1(tfidf)}
    for C in (0.3, 1.0, 3.0, 10.0):
        e5 = LogisticRegression(C=C, max_iter=3000).fit(x_train, y_train).predict_proba(x_dev)[:, 1]
        result[f"e5_lr_C{C}"] = macro_f1(e5)
        for w in (0.3, 0.5):
            result[f"blend_{1 - w:.1f}tfidf_{w}e5_C{C}"] = macro_f1((1 - w) * tfidf + w * e5)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""The fast embedding model: a static (model2vec) model distilled from the rebuilt e5 model.

model2vec passes every piece of e5's 250,002-piece vocabulary through e5 once, keeps each output
vector (reduced by PCA to STATIC_DIMS and weighted by Zipf's law), and then embeds a text as the
mean of its pieces' vectors: no transformer at run time, ~100x faster, less accurate (see README,
"Running at scale"). It is built by this project's own code from e5 (no download), once per
machine, into the model cache next to e5: `python -m pipeline distill-static`, or on first use.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from pipeline.models import e5_model, model_cache

log = logging.getLogger("pipeline")
M2V_VERSION = "0.8.0"
BUILD = 2  # 1 saved Fortran-ordered (scrambled) vectors
STATIC_DIMS = 256
MODEL_ID = f"static-{e5_model.MODEL_ID}/m2v{M2V_VERSION}/pca{STATIC_DIMS}/build{BUILD}"
MARKER = "BUILT.json"
_LOADED: dict = {}


def model_dir(cache_dir: Path | None = None) -> Path:
    safe = MODEL_ID.replace("@", "_").replace("/", "_")
    return Path(cache_dir or e5_model.default_cache_dir()) / "models" / safe


def is_complete(folder: Path) -> bool:
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
        return marker.get("model_id") == MODEL_ID and all((folder / name).stat().st_size == size for name, size in marker["files"].items())
    except (OSError, ValueError, KeyError, AttributeError):
        return False


def ensure_model(cache_dir: Path | None = None, progress: bool = True) -> Path:
    """The folder of the static model, distilling it first if it is not there yet."""
    final = model_dir(cache_dir)

    def build(tmp: Path) -> None:
        log.warning("distilling the static embedding model from e5 into %s (once per machine; about 10 minutes on 2 cores)", final)
        start = time.monotonic()
        distill(e5_model.ensure_model(cache_dir, progress), tmp, progress)
        log.warning("distilled %s in %.0f s", final, time.monotonic() - start)

    model_cache.build_once(final, is_complete, build)  # a second process waits for the first build
    return final


def distill(e5_dir: Path, out: Path, progress: bool = True) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never ask a hub
    try:
        from model2vec.distill import distill_from_model
    except ImportError:
        raise RuntimeError(
            f"the fast embedding model needs model2vec[distill]=={M2V_VERSION}: pip install -e . (it is a dependency)"
        ) from None
    import torch
    from transformers import AutoModel, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModel.from_pretrained(str(e5_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(e5_dir), use_fast=True)
    static = distill_from_model(model=model, tokenizer=tokenizer, pca_dims=STATIC_DIMS, device="cpu")
    # PCA hands back a Fortran-ordered matrix, and safetensors writes memory order without a word:
    # saved as is, every vector would be scrambled on reload. Save C order, then check the reload.
    static.embedding = np.ascontiguousarray(static.embedding)
    static.save_pretrained(str(out))
    from model2vec import StaticModel

    if not np.array_equal(StaticModel.from_pretrained(str(out)).embedding, static.embedding):
        raise RuntimeError(f"{out}: the saved static model does not reload to the distilled vectors")
    files = {p.name: p.stat().st_size for p in out.iterdir() if p.is_file()}
    (out / MARKER).write_text(json.dumps({"model_id": MODEL_ID, "source": str(e5_dir), "files": files}, indent=1), encoding="utf-8")


class StaticEncoder:
    """`encode` like sentence-transformers' for the embed stage: unit-length float32 vectors."""

    def __init__(self, folder: Path):
        from model2vec import StaticModel

        self.model = StaticModel.from_pretrained(str(folder))
        self.dim = int(self.model.embedding.shape[1])

    def encode(self, texts: list[str], batch_size: int = 1024, **_ignored) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        vectors = self.model.encode(texts, batch_size=max(batch_size, 1024), show_progress_bar=False, use_multiprocessing=False).astype(
            np.float32
        )
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.where(norms > 0, norms, 1.0)


def load(cache_dir: Path | None = None, progress: bool = True) -> StaticEncoder:
    folder = ensure_model(cache_dir, progress)
    if str(folder) not in _LOADED:
        _LOADED[str(folder)] = StaticEncoder(folder)
    return _LOADED[str(folder)]

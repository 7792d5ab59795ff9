"""Embed: one vector per distinct `text_norm`, cached across runs.

`embed.model` picks the e5 sentence-transformers model (quality) or the static model distilled from
it (`pipeline/static_model.py`, fast). Both give unit-length float32 vectors.
"""
from __future__ import annotations

import numpy as np
import polars as pl

from pipeline.config import EmbedConfig
from pipeline.embedding_cache import EmbeddingCache, text_hash
from pipeline.stage import Stage, StageContext

_MODELS: dict = {}
# Texts per encode call and cache shard. ST sorts each call's texts by length, so larger chunks pad
# less; 8192 keeps that benefit and bounds what a killed run loses.
CHUNK_ROWS = 8192
DIM = 384


def load_model(cfg: EmbedConfig, cache_dir, progress: bool = False):
    """The model is loaded once per process (it takes seconds) and reused by later calls."""
    import torch

    from pipeline import e5_model

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if not progress:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # its "Loading weights" bar would land in scheduler logs
    if cfg.model == "static-e5":
        from pipeline import static_model

        return static_model.load(cache_dir, progress)
    key = (str(cache_dir), cfg.max_seq_length)
    if key not in _MODELS:
        model = e5_model.load_sentence_transformer(cache_dir)
        model.max_seq_length = cfg.max_seq_length
        _MODELS[key] = model
    return _MODELS[key]


class Encoder:
    """Batch function (pipeline/executor.py): vectors of `text` rows, stored in the cache as they
    are made, so a killed run keeps every finished batch."""

    def __init__(self, cfg: EmbedConfig, cache_dir, progress: bool = False):
        self.cfg, self.model = cfg, load_model(cfg, cache_dir, progress)
        self.cache = EmbeddingCache(cache_dir, model_id(cfg)) if uses_cache(cfg) else None

    def __call__(self, batch: pl.DataFrame) -> pl.DataFrame:
        vectors = encode(self.model, batch["text"].to_list(), self.cfg)
        if self.cache is not None:
            self.cache.store(batch["text_hash"].to_list(), vectors)
        return pl.DataFrame({"vector": pl.Series("vector", vectors, dtype=pl.Array(pl.Float32, vectors.shape[1]))})


def uses_cache(cfg: EmbedConfig) -> bool:
    """The static model encodes faster than its vectors could be read back: it is not cached."""
    return cfg.model != "static-e5"


def model_id(cfg: EmbedConfig) -> str:
    from pipeline import e5_model

    if cfg.model == "static-e5":
        from pipeline import static_model

        return static_model.MODEL_ID
    return f"{e5_model.MODEL_ID}/{cfg.prompt_name}/len{cfg.max_seq_length}"


def encode(model, texts: list[str], cfg: EmbedConfig) -> np.ndarray:
    """Unit-length float32 vectors of the texts (no cache)."""
    if cfg.model == "static-e5":
        return model.encode(texts)
    return model.encode(texts, prompt_name=cfg.prompt_name, batch_size=cfg.batch_size, normalize_embeddings=True,
                        show_progress_bar=False, convert_to_numpy=True).astype(np.float32)


def run(table: pl.DataFrame, cfg: EmbedConfig, ctx: StageContext) -> pl.DataFrame:
    texts = table["text_norm"].to_list()
    hashes = [text_hash(t) for t in texts]
    distinct = dict(zip(hashes, texts))  # one vector per distinct normalised text
    vectors = EmbeddingCache(ctx.cache_dir, model_id(cfg)).lookup(list(distinct)) if uses_cache(cfg) else {}
    todo = [h for h in distinct if h not in vectors]
    ctx.log.info("embed: %d rows, %d distinct texts, %d cached, %d to encode",
                 len(texts), len(distinct), len(distinct) - len(todo), len(todo))
    if todo:
        batch = pl.DataFrame({"text_hash": pl.Series(todo, dtype=pl.UInt64), "text": [distinct[h] for h in todo]})
        new = ctx.executor.map_batches(Encoder, batch, batch_size=CHUNK_ROWS, desc="embed",
                                       cfg=cfg, cache_dir=ctx.cache_dir)["vector"].to_numpy()
        vectors.update(zip(todo, new))
    ctx.facts.update(embed_model=model_id(cfg), distinct_texts=len(distinct), encoded=len(todo))
    if not hashes:
        return table.with_columns(pl.Series("embedding", [], dtype=pl.Array(pl.Float32, DIM)))
    # One matrix of the distinct texts, then a gather: copies of a text share its row.
    position = {h: i for i, h in enumerate(distinct)}
    distinct_matrix = np.stack([vectors.pop(h) for h in distinct])
    matrix = distinct_matrix[np.fromiter((position[h] for h in hashes), np.int64, len(hashes))]
    del distinct_matrix
    return table.with_columns(pl.Series("embedding", matrix, dtype=pl.Array(pl.Float32, matrix.shape[1])))


STAGE = Stage(name="embed", version="1", config_section="embed",
              code_modules=("pipeline.e5_model", "pipeline.static_model", "pipeline.embedding_cache"),
              requires=("text_norm",), adds=("embedding",), run=run)

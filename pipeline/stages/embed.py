"""Embed: one sentence-transformers vector per distinct `text_norm`, cached across runs."""
from __future__ import annotations

import numpy as np
import polars as pl

from pipeline.config import EmbedConfig
from pipeline.embedding_cache import EmbeddingCache, text_hash
from pipeline.stage import Stage, StageContext

_MODELS: dict = {}


def load_model(cfg: EmbedConfig, ctx: StageContext):
    """The model is loaded once per process (it takes seconds) and reused by later calls."""
    import torch

    from pipeline import e5_model

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if not ctx.progress:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # its "Loading weights" bar would land in scheduler logs
    key = (str(ctx.cache_dir), cfg.max_seq_length)
    if key not in _MODELS:
        model = e5_model.load_sentence_transformer(ctx.cache_dir)
        model.max_seq_length = cfg.max_seq_length
        _MODELS[key] = model
    return _MODELS[key]


def model_id(cfg: EmbedConfig) -> str:
    from pipeline import e5_model

    return f"{e5_model.MODEL_ID}/{cfg.prompt_name}/len{cfg.max_seq_length}"


def run(table: pl.DataFrame, cfg: EmbedConfig, ctx: StageContext) -> pl.DataFrame:
    texts = table["text_norm"].to_list()
    hashes = [text_hash(t) for t in texts]
    distinct = dict(zip(hashes, texts))  # one vector per distinct normalised text
    cache = EmbeddingCache(ctx.cache_dir, model_id(cfg))
    vectors = cache.lookup(list(distinct))
    todo = [h for h in distinct if h not in vectors]
    ctx.log.info("embed: %d rows, %d distinct texts, %d cached, %d to encode",
                 len(texts), len(distinct), len(distinct) - len(todo), len(todo))
    if todo:
        model = load_model(cfg, ctx)
        new = model.encode([distinct[h] for h in todo], prompt_name=cfg.prompt_name,
                           batch_size=cfg.batch_size, normalize_embeddings=True,
                           show_progress_bar=ctx.progress, convert_to_numpy=True).astype(np.float32)
        cache.store(todo, new)
        vectors.update(zip(todo, new))
    ctx.facts.update(embed_model=model_id(cfg), distinct_texts=len(distinct), encoded=len(todo))
    matrix = np.stack([vectors[h] for h in hashes]) if hashes else np.zeros((0, 384), np.float32)
    return table.with_columns(pl.Series("embedding", matrix, dtype=pl.Array(pl.Float32, matrix.shape[1])))


STAGE = Stage(name="embed", version="1", config_section="embed",
              code_modules=("pipeline.e5_model", "pipeline.embedding_cache"),
              requires=("text_norm",), adds=("embedding",), run=run)

"""Embed: one vector per distinct `text_norm`, cached across runs.

`embed.model` picks the e5 sentence-transformers model (quality) or the static model distilled from
it (fast); both through pipeline/models/embedder.py, the service the flag stage uses too.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.config import EmbedConfig
from pipeline.exec.progress import in_ticks
from pipeline.io.embedding_cache import EmbeddingCache, text_hash
from pipeline.models.embedder import DIM, cache_id, encode, encode_with_offence, load_model, model_id
from pipeline.stage import Stage, StageContext

# Texts per encode call and cache shard. ST sorts each call's texts by length, so larger chunks pad
# less; 8192 keeps that benefit and bounds what a killed run loses.
CHUNK_ROWS = 8192
GATHER_ROWS = 100_000  # rows per slice of the embedding column: bounds the temporary copy


class Encoder:
    """Batch function (pipeline/exec/executor.py): vectors (and with `offence_from_states`, offence
    logits) of `text` rows, stored in the cache as they are made, so a killed run keeps every
    finished batch."""

    def __init__(self, cfg: EmbedConfig, cache_dir, models_dir: Path, progress: bool = False):
        self.cfg, self.model = cfg, load_model(cfg, cache_dir, progress)
        self.cache = EmbeddingCache(cache_dir, cache_id(cfg)) if uses_cache(cfg) else None
        self.offence = load_offence_encoder(models_dir, cache_dir) if fused(cfg) else None
        self.logit_cache = EmbeddingCache(cache_dir, logit_cache_id(cfg, self.offence)) if self.offence else None

    def __call__(self, batch: pl.DataFrame, tick=None) -> pl.DataFrame:
        texts, hashes = batch["text"].to_list(), batch["text_hash"].to_list()
        if not texts:
            return pl.DataFrame(schema={"vector": pl.Array(pl.Float32, DIM)})
        # Texts arrive longest first, so encoding them in consecutive parts keeps each part's
        # padding as low as one call would, and lets the bar move.
        if self.offence is None:
            vectors = np.concatenate([encode(self.model, texts[p], self.cfg) for p in in_ticks(len(texts), tick)])
        else:
            parts = [encode_with_offence(self.model, self.offence, texts[p], self.cfg) for p in in_ticks(len(texts), tick)]
            vectors, logits = np.concatenate([v for v, _ in parts]), np.concatenate([x for _, x in parts])
            self.logit_cache.store(hashes, logits[:, None])
        if self.cache is not None:
            self.cache.store(hashes, vectors)
        out = {"vector": pl.Series("vector", vectors, dtype=pl.Array(pl.Float32, vectors.shape[1]))}
        if self.offence is not None:
            out["offence_logit"] = pl.Series("offence_logit", logits, dtype=pl.Float32)
        return pl.DataFrame(out)


def fused(cfg: EmbedConfig) -> bool:
    return cfg.offence_from_states and cfg.model == "multilingual-e5-small"


def load_offence_encoder(models_dir: Path, cache_dir):
    """Loaded once per process (about a second each time) and shared with the flag stage."""
    from pipeline.models.offence_encoder import load_shared

    return load_shared(models_dir / "offence_encoder_extra", cache_dir)


def logit_cache_id(cfg: EmbedConfig, offence) -> str:
    return f"{cache_id(cfg)}/offence-extra-{offence.version}"


def offence_extra_fingerprint(models_dir: Path) -> str:
    """The offence_encoder_extra in `models_dir` (the run's, shared with the flag stage), by its
    model.json, which records its weights' sha256."""
    meta = models_dir / "offence_encoder_extra" / "model.json"
    return hashlib.sha256(meta.read_bytes()).hexdigest()[:16]


def uses_cache(cfg: EmbedConfig) -> bool:
    """The static model encodes faster than its vectors could be read back: it is not cached."""
    return cfg.model != "static-e5"


def run(table: pl.DataFrame, cfg: EmbedConfig, ctx: StageContext) -> pl.DataFrame:
    texts = table["text_norm"].to_list()
    hashes = [text_hash(t) for t in texts]
    distinct = dict(zip(hashes, texts))  # one vector per distinct normalised text
    vectors = EmbeddingCache(ctx.cache_dir, cache_id(cfg)).lookup(list(distinct)) if uses_cache(cfg) else {}
    logits: dict = {}
    if fused(cfg) and distinct:  # an empty batch needs no model (nor torch) at all
        logits = EmbeddingCache(ctx.cache_dir, logit_cache_id(cfg, load_offence_encoder(ctx.models_dir, ctx.cache_dir))).lookup(
            list(distinct)
        )
    todo = [h for h in distinct if h not in vectors or (fused(cfg) and h not in logits)]
    ctx.log.info(
        "embed: %d rows, %d distinct texts, %d cached, %d to encode", len(texts), len(distinct), len(distinct) - len(todo), len(todo)
    )
    if todo:
        # Longest first over the whole batch, as sentence-transformers orders one encode call: each
        # chunk then holds texts of similar length and pads little (chunks of the input order padded
        # 8192-text windows to their longest text: ~50% slower on Weibo comments).
        todo.sort(key=lambda h: -len(distinct[h]))
        batch = pl.DataFrame({"text_hash": pl.Series(todo, dtype=pl.UInt64), "text": [distinct[h] for h in todo]})
        encoded = ctx.executor.map_batches(
            Encoder, batch, batch_size=CHUNK_ROWS, desc="embed", cfg=cfg, cache_dir=ctx.cache_dir, models_dir=ctx.models_dir
        )
    ctx.facts.update(embed_model=model_id(cfg), distinct_texts=len(distinct), encoded=len(todo))
    if not hashes:
        return table.with_columns(pl.Series("embedding", [], dtype=pl.Array(pl.Float32, DIM)))
    # One matrix of the distinct texts, filled in place (no per-text arrays: at a million comments
    # those copies were gigabytes), then gathered per row in slices: copies of a text share its row.
    position = {h: i for i, h in enumerate(distinct)}
    dim = encoded["vector"].dtype.size if todo else len(next(iter(vectors.values())))  # 256 for the static model
    distinct_matrix = np.empty((len(distinct), dim), np.float32)
    distinct_logits = np.empty(len(distinct), np.float32)
    for h, v in vectors.items():
        distinct_matrix[position[h]] = v
    for h, v in logits.items():
        distinct_logits[position[h]] = v[0]
    del vectors, logits
    if todo:
        at = np.fromiter((position[h] for h in todo), np.int64, len(todo))
        distinct_matrix[at] = encoded["vector"].to_numpy()
        if fused(cfg):
            distinct_logits[at] = encoded["offence_logit"].to_numpy()
        del encoded
    rows = np.fromiter((position[h] for h in hashes), np.int64, len(hashes))
    dtype = pl.Array(pl.Float32, dim)
    parts = [pl.Series("embedding", distinct_matrix[rows[i : i + GATHER_ROWS]], dtype=dtype) for i in range(0, len(rows), GATHER_ROWS)]
    columns = [pl.concat(parts, rechunk=False)]
    del parts, distinct_matrix
    if fused(cfg):
        columns.append(pl.Series("offence_logit", distinct_logits[rows], dtype=pl.Float32))
    return table.with_columns(columns)


STAGE: Stage[EmbedConfig] = Stage(
    name="embed",
    version="1",
    config_section="embed",
    code_modules=(
        "pipeline.models.embedder",
        "pipeline.models.e5_model",
        "pipeline.models.static_model",
        "pipeline.io.embedding_cache",
        "pipeline.models.offence_encoder",
    ),
    resources=lambda cfg, ctx: offence_extra_fingerprint(ctx.models_dir) if fused(cfg) else "",
    requires=("text_norm",),
    adds=("embedding",),
    run=run,
)

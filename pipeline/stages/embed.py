"""Embed: one vector per distinct `text_norm`, cached across runs.

`embed.model` picks the e5 sentence-transformers model (quality) or the static model distilled from
it (`pipeline/static_model.py`, fast). Both give unit-length float32 vectors.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.config import EmbedConfig
from pipeline.embedding_cache import EmbeddingCache, text_hash
from pipeline.progress import in_ticks
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
    """Batch function (pipeline/executor.py): vectors (and with `offence_from_states`, offence
    logits) of `text` rows, stored in the cache as they are made, so a killed run keeps every
    finished batch."""

    def __init__(self, cfg: EmbedConfig, cache_dir, progress: bool = False):
        self.cfg, self.model = cfg, load_model(cfg, cache_dir, progress)
        self.cache = EmbeddingCache(cache_dir, model_id(cfg)) if uses_cache(cfg) else None
        self.offence = load_offence_encoder(cache_dir) if fused(cfg) else None
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


def load_offence_encoder(cache_dir):
    """Loaded once per process (about a second each time) and shared with the flag stage."""
    from pipeline.config import PROJECT_ROOT
    from pipeline.offence_encoder import load_shared

    return load_shared(PROJECT_ROOT / "models" / "offence_encoder_extra", cache_dir)


def logit_cache_id(cfg: EmbedConfig, offence) -> str:
    return f"{model_id(cfg)}/offence-extra-{offence.version}"


def encode_with_offence(model, offence, texts: list[str], cfg: EmbedConfig) -> tuple[np.ndarray, np.ndarray]:
    """The embeddings exactly as `encode` gives them, and the offence encoder's logits read from the
    same forward pass's final token states (one extra layer instead of a second e5 pass); the
    offence layer reads each padded batch as it comes."""
    vectors = np.empty((len(texts), DIM), np.float32)
    logits = np.empty(len(texts), np.float32)
    for idx, features, out in _forward(model, texts, cfg):
        vectors[idx] = out["sentence_embedding"]
        logits[idx] = offence.logits_from_states(out["token_embeddings"], features["attention_mask"])
    return vectors, logits


# A text is padded to a multiple of this many tokens of its own length, never to its batch's
# longest text: padding length changes the last bits of a vector (up to 7e-8 here), and those bits
# decided between 2 and 4 topics on the 36-comment sample. With it a text's vector does not depend
# on which texts share its batch, what the cache already held, or the executor.
PAD_MULTIPLE = 8


def _forward(model, texts: list[str], cfg: EmbedConfig):
    """(row indices, features, outputs) per batch; batches hold texts of one padded length."""
    import torch

    prompt = model.prompts[cfg.prompt_name]
    tokenizer, limit = model.tokenizer, model.max_seq_length
    lengths = [len(ids) for ids in tokenizer([(prompt + t).strip() for t in texts], truncation=True, max_length=limit)["input_ids"]]
    padded = np.minimum(-(-np.array(lengths, dtype=np.int64) // PAD_MULTIPLE) * PAD_MULTIPLE, limit)
    order = np.argsort(-padded, kind="stable")
    model.eval()
    with torch.inference_mode():
        start = 0
        while start < len(order):
            width = padded[order[start]]
            stop = start
            while stop < len(order) and stop - start < cfg.batch_size and padded[order[stop]] == width:
                stop += 1
            idx = order[start:stop]
            features = tokenizer([(prompt + texts[i]).strip() for i in idx], padding="max_length", truncation=True,
                                 max_length=int(width), return_tensors="pt")
            out = model(dict(features))
            out["sentence_embedding"] = torch.nn.functional.normalize(out["sentence_embedding"], p=2, dim=1).numpy()
            yield idx, features, out
            start = stop


def offence_extra_fingerprint(models_dir: Path | None = None) -> str:
    """The offence_encoder_extra in `models_dir` (default: the project's models/, the one this stage
    uses), by its model.json, which records its weights' sha256."""
    from pipeline.config import PROJECT_ROOT

    meta = (models_dir or PROJECT_ROOT / "models") / "offence_encoder_extra" / "model.json"
    return hashlib.sha256(meta.read_bytes()).hexdigest()[:16]


def uses_cache(cfg: EmbedConfig) -> bool:
    """The static model encodes faster than its vectors could be read back: it is not cached."""
    return cfg.model != "static-e5"


def model_id(cfg: EmbedConfig) -> str:
    from pipeline import e5_model

    if cfg.model == "static-e5":
        from pipeline import static_model

        return static_model.MODEL_ID
    return f"{e5_model.MODEL_ID}/{cfg.prompt_name}/len{cfg.max_seq_length}/pad{PAD_MULTIPLE}"


def encode(model, texts: list[str], cfg: EmbedConfig) -> np.ndarray:
    """Unit-length float32 vectors of the texts (no cache)."""
    if cfg.model == "static-e5":
        return model.encode(texts)
    vectors = np.empty((len(texts), DIM), np.float32)
    for idx, _, out in _forward(model, texts, cfg):
        vectors[idx] = out["sentence_embedding"]
    return vectors


def run(table: pl.DataFrame, cfg: EmbedConfig, ctx: StageContext) -> pl.DataFrame:
    texts = table["text_norm"].to_list()
    hashes = [text_hash(t) for t in texts]
    distinct = dict(zip(hashes, texts))  # one vector per distinct normalised text
    vectors = EmbeddingCache(ctx.cache_dir, model_id(cfg)).lookup(list(distinct)) if uses_cache(cfg) else {}
    logits: dict = {}
    if fused(cfg):
        logits = EmbeddingCache(ctx.cache_dir, logit_cache_id(cfg, load_offence_encoder(ctx.cache_dir))).lookup(list(distinct))
    todo = [h for h in distinct if h not in vectors or (fused(cfg) and h not in logits)]
    ctx.log.info("embed: %d rows, %d distinct texts, %d cached, %d to encode",
                 len(texts), len(distinct), len(distinct) - len(todo), len(todo))
    if todo:
        # Longest first over the whole batch, as sentence-transformers orders one encode call: each
        # chunk then holds texts of similar length and pads little (chunks of the input order padded
        # 8192-text windows to their longest text: ~50% slower on Weibo comments).
        todo.sort(key=lambda h: -len(distinct[h]))
        batch = pl.DataFrame({"text_hash": pl.Series(todo, dtype=pl.UInt64), "text": [distinct[h] for h in todo]})
        encoded = ctx.executor.map_batches(Encoder, batch, batch_size=CHUNK_ROWS, desc="embed",
                                           cfg=cfg, cache_dir=ctx.cache_dir)
        vectors.update(zip(todo, encoded["vector"].to_numpy()))
        if fused(cfg):
            logits.update(zip(todo, encoded["offence_logit"].to_numpy()[:, None]))
        del encoded
    ctx.facts.update(embed_model=model_id(cfg), distinct_texts=len(distinct), encoded=len(todo))
    if not hashes:
        return table.with_columns(pl.Series("embedding", [], dtype=pl.Array(pl.Float32, DIM)))
    # One matrix of the distinct texts, then a gather: copies of a text share its row.
    position = {h: i for i, h in enumerate(distinct)}
    distinct_matrix = np.stack([vectors.pop(h) for h in distinct])
    rows = np.fromiter((position[h] for h in hashes), np.int64, len(hashes))
    matrix = distinct_matrix[rows]
    del distinct_matrix
    columns = [pl.Series("embedding", matrix, dtype=pl.Array(pl.Float32, matrix.shape[1]))]
    if fused(cfg):
        distinct_logits = np.array([float(logits[h][0]) for h in distinct], dtype=np.float32)
        columns.append(pl.Series("offence_logit", distinct_logits[rows], dtype=pl.Float32))
    return table.with_columns(columns)


STAGE = Stage(name="embed", version="1", config_section="embed",
              code_modules=("pipeline.e5_model", "pipeline.static_model", "pipeline.embedding_cache", "pipeline.offence_encoder"),
              resources=lambda cfg: offence_extra_fingerprint() if fused(cfg) else "",
              requires=("text_norm",), adds=("embedding",), run=run)

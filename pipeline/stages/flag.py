"""Flag: per category a score in [0,1], a flag at the configured threshold, and the evidence.

Categories (definitions also in README and models/README.md):
- abuse: insults, profanity or threats aimed at a person or at the reader.
- hate: demeaning or dehumanising content aimed at a group (region, ethnicity, nationality, gender,
  sexuality, religion, disability).
- conspiracy: claims that hidden actors secretly steer events, as opposed to criticism or reporting.

How the scores are made: pipeline/scoring/score.py (the formula is in the README, "The flag score").
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.config import FlagConfig
from pipeline.exec.progress import in_ticks
from pipeline.scoring.score import (
    CATEGORIES,
    EVIDENCE_MIN_SCORE,
    SCORE_SCHEMA,
    load_encoder,
    load_resources,
    models_dir_of,
    nearest_example_evidence,
    score_texts,
)
from pipeline.stage import Stage, StageContext

log = logging.getLogger("pipeline")
# Rows scored per call: each call has a fixed cost (TF-IDF, one regex scan per rule set) that
# dominates below a few thousand rows; a call this size still moves the progress bar every second.
SCORE_ROWS = 2048
CHUNK_ROWS = 20000  # distinct texts scored per call: bounds the TF-IDF matrices, paces the progress bar


def examples_in_run_space(cfg: FlagConfig, ctx: StageContext) -> np.ndarray | None:
    """The labelled conspiracy examples embedded by this run's model, when that is not the model
    the conspiracy head was trained with (e.g. the fast static model); None when it is."""
    head = load_resources(models_dir_of(cfg))["conspiracy_head"]
    if ctx.embedder is None:
        return None  # callers that build their own context embed with the default (e5) model
    if ctx.embedder.model_id == head.embed_model:
        return None
    return ctx.embedder.encode(head.examples)


class Scorer:
    """Batch function (pipeline/exec/executor.py): scores and evidence of `text_norm` rows."""

    def __init__(self, cfg: FlagConfig, cache_dir: Path | None, example_vectors: np.ndarray | None = None):
        self.cfg, self.cache_dir, self.example_vectors = cfg, cache_dir, example_vectors
        load_resources(models_dir_of(cfg))  # loaded once here, not inside the first batch

    def __call__(self, batch: pl.DataFrame, tick=None) -> pl.DataFrame:
        parts = [self._score(batch[p]) for p in in_ticks(batch.height, tick, SCORE_ROWS)]
        return pl.concat(parts, how="vertical") if parts else self._score(batch)

    def _score(self, batch: pl.DataFrame) -> pl.DataFrame:
        # Vectors only travel when the head's probability counts; the nearest-example evidence is
        # added afterwards, for the few rows that need it (run()).
        vectors = batch["embedding"].to_numpy().astype(np.float32, copy=False) if "embedding" in batch.columns else None
        logits = batch["offence_logit"].to_numpy().astype(np.float32) if "offence_logit" in batch.columns else None
        return pl.DataFrame(
            score_texts(
                batch["text_norm"].to_list(), vectors, self.cfg, self.cache_dir, encoder_logits=logits, example_vectors=self.example_vectors
            ),
            schema=SCORE_SCHEMA,
        )


def run(table: pl.DataFrame, cfg: FlagConfig, ctx: StageContext) -> pl.DataFrame:
    if table.height == 0:
        return _empty(table, cfg)
    # Score each distinct text once: copies of a comment get identical scores and evidence.
    distinct = table["text_norm"].unique(maintain_order=True)
    example_vectors = examples_in_run_space(cfg, ctx)
    with_vectors = cfg.conspiracy_model_weight > 0
    # The embed stage's offence logits (embed.offence_from_states) come from the 'extra' encoder in
    # the run's models directory (ctx.models_dir), the one this stage would load.
    with_logits = (
        "offence_logit" in table.columns
        and cfg.offence_encoder == "extra"
        and cfg.offence_model != "ngram"
        and table["offence_logit"].null_count() == 0
    )
    columns = ["text_norm"] + ["embedding"] * with_vectors + ["offence_logit"] * with_logits
    batch = table.select(columns).unique("text_norm", keep="first", maintain_order=True) if len(columns) > 1 else distinct.to_frame()
    scored = ctx.executor.map_batches(
        Scorer, batch, batch_size=CHUNK_ROWS, desc="flag", cfg=cfg, cache_dir=ctx.cache_dir, example_vectors=example_vectors
    )
    scored = scored.with_columns(distinct.alias("text_norm"))
    del batch
    if not with_vectors:
        scored = _add_nearest_examples(scored, table, cfg, example_vectors)
    # The key alone is joined (a whole-table join would copy the embedding vectors too).
    joined = table.select("text_norm").join(scored, on="text_norm", how="left", maintain_order="left")
    table = table.with_columns(joined.drop("text_norm").get_columns())
    del joined
    res = load_resources(models_dir_of(cfg))
    thresholds = {c: getattr(cfg, f"threshold_{c}") for c in CATEGORIES}
    table = table.with_columns([(pl.col(f"score_{c}") >= thresholds[c]).alias(f"flag_{c}") for c in CATEGORIES])
    table = table.with_columns(pl.any_horizontal([f"flag_{c}" for c in CATEGORIES]).alias("needs_review"))
    ctx.facts.update(
        offence_model_version=res["offence"].version,
        offence_model=cfg.offence_model,
        offence_encoder_version=load_encoder(models_dir_of(cfg), ctx.cache_dir, cfg.offence_encoder).version
        if cfg.offence_model != "ngram"
        else None,
        offence_logits_from_embed=with_logits,
        conspiracy_model_version=res["conspiracy_head"].version,
        thresholds=thresholds,
        flagged={c: int(table[f"flag_{c}"].sum()) for c in CATEGORIES},
        needs_review=int(table["needs_review"].sum()),
    )
    return table


def _empty(table: pl.DataFrame, cfg: FlagConfig) -> pl.DataFrame:
    """An empty batch (a quiet night is normal): the stage's columns with no rows, no model loaded."""
    table = pl.concat([table, pl.DataFrame(schema=SCORE_SCHEMA)], how="horizontal")
    return table.with_columns([pl.lit(False).alias(f"flag_{c}") for c in CATEGORIES] + [pl.lit(False).alias("needs_review")])


def _add_nearest_examples(scored: pl.DataFrame, table: pl.DataFrame, cfg: FlagConfig, example_vectors: np.ndarray | None) -> pl.DataFrame:
    """The nearest-example evidence line of every text likely to be a conspiracy claim."""
    needed = scored.filter(pl.col("score_conspiracy") >= EVIDENCE_MIN_SCORE)["text_norm"]
    if needed.len() == 0:
        return scored
    rows = (
        table.filter(pl.col("text_norm").is_in(needed.implode()))
        .select("text_norm", "embedding")
        .unique("text_norm", keep="first", maintain_order=True)
    )
    lines = nearest_example_evidence(rows["embedding"].to_numpy().astype(np.float32, copy=False), cfg, example_vectors)
    extra = pl.DataFrame({"text_norm": rows["text_norm"], "_nearest": lines})
    return (
        scored.join(extra, on="text_norm", how="left", maintain_order="left")
        .with_columns(
            pl.when(pl.col("_nearest").is_not_null())
            .then(pl.col("evidence_conspiracy").list.concat(pl.concat_list("_nearest")))
            .otherwise(pl.col("evidence_conspiracy"))
            .alias("evidence_conspiracy")
        )
        .drop("_nearest")
    )


def resources_fingerprint(cfg: FlagConfig, ctx: StageContext | None = None) -> str:
    """Retraining the model or editing a lexicon or rule must rerun the stage."""
    root = models_dir_of(cfg)
    files = [
        root / "offence" / "model.json",
        root / "offence_encoder" / "model.json",
        root / "offence_encoder_extra" / "model.json",
        root / "conspiracy" / "head.json",
        root / "conspiracy_ngram" / "model.json",
        *sorted((root / "lexicons").glob("*.txt")),
        *sorted((root / "rules").glob("*.yaml")),
    ]
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()[:16]


STAGE: Stage[FlagConfig] = Stage(
    name="flag",
    version="2",
    config_section="flag",
    requires=("text_norm", "embedding"),
    code_modules=(
        "pipeline.scoring.score",
        "pipeline.scoring.rules",
        "pipeline.scoring.spam",
        "pipeline.models.offence_ngram",
        "pipeline.models.offence_encoder",
        "pipeline.models.conspiracy_model",
        "pipeline.text.match_key",
        "pipeline.text.keywords",
    ),
    resources=resources_fingerprint,
    adds=tuple(f"score_{c}" for c in CATEGORIES)
    + tuple(f"flag_{c}" for c in CATEGORIES)
    + tuple(f"evidence_{c}" for c in CATEGORIES)
    + ("needs_review",),
    run=run,
)

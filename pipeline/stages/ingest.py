"""Ingest: validate raw rows, give every comment a unique id, add `text_norm`.

Rows that cannot become comments (unreadable, no text, empty text) go to the quarantine side
table with their file, row and reason; every other row is kept, in input order.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import polars as pl

from pipeline.config import IngestConfig
from pipeline.stage import Stage, StageContext
from pipeline.text.normalize import normalize_text

QUARANTINE_SCHEMA = {"source_file": pl.String, "source_row": pl.Int64, "comment_id": pl.String, "text": pl.String, "reason": pl.String}


def run(raw: pl.DataFrame, cfg: IngestConfig, ctx: StageContext) -> pl.DataFrame:
    raw = raw.with_row_index("input_index")
    reason = (
        pl.when(pl.col("read_error").is_not_null())
        .then(pl.col("read_error"))
        .when(pl.col("raw_text").is_null())
        .then(pl.lit("missing text"))
        .when(pl.col("raw_text").str.strip_chars().str.len_chars() == 0)
        .then(pl.lit("empty text"))
    )
    raw = raw.with_columns(reason.alias("reason"))
    texts = raw.filter(pl.col("reason").is_null())["raw_text"].unique(maintain_order=True)
    # Copies are common: each distinct text is normalised once.
    normalised = ctx.executor.map_batches(
        Normalizer, pl.DataFrame({"text": texts}), batch_size=NORMALIZE_BATCH, desc="ingest: normalise", max_chars=cfg.max_chars
    )
    norm_of = dict(zip(texts.to_list(), normalised["text_norm"].to_list()))
    # Text made only of control, invisible or emoji-variation characters normalises to nothing.
    invisible = [t for t, n in norm_of.items() if not n.strip()]
    raw = raw.with_columns(
        pl.when(pl.col("reason").is_null() & pl.col("raw_text").is_in(invisible))
        .then(pl.lit("no visible text (only control or invisible characters)"))
        .otherwise(pl.col("reason"))
        .alias("reason")
    )
    bad = raw.filter(pl.col("reason").is_not_null())
    ctx.side_tables["quarantine"] = bad.select(
        "source_file", "source_row", pl.col("raw_id").alias("comment_id"), pl.col("raw_text").alias("text"), "reason"
    ).cast(QUARANTINE_SCHEMA)
    kept = raw.filter(pl.col("reason").is_null())

    # Stable generated ids: the same file and row give the same id in every run.
    generated = pl.format("{}:{}", pl.col("source_file").map_elements(lambda p: Path(p).stem, return_dtype=pl.String), pl.col("source_row"))
    kept = kept.with_columns(pl.coalesce("raw_id", generated).alias("comment_id"))
    kept = _make_ids_unique(kept)

    norm = [norm_of[t] for t in kept["raw_text"].to_list()]
    kept = kept.with_columns(
        pl.col("raw_text").alias("text"),
        pl.Series("text_norm", norm, dtype=pl.String),
        (pl.col("raw_text").str.len_chars() > cfg.max_chars).alias("text_truncated"),
    )
    kept = _add_context(kept)
    ctx.facts["quarantined"] = bad.height
    ctx.facts["context"] = {c: int(kept[c].is_not_null().sum()) for c in CONTEXT_COLUMNS}
    ctx.facts["unreadable_times"] = int(kept["time_note"].is_not_null().sum())
    return kept.select(
        "comment_id",
        "text",
        "text_norm",
        "source_file",
        "source_row",
        "input_index",
        "text_truncated",
        "id_note",
        *CONTEXT_COLUMNS,
        "time_note",
    )


CONTEXT_COLUMNS = ("thread_id", "created_at", "user_id")
_EPOCH = re.compile(r"^[+-]?\d+(\.\d+)?$")
_MS_DIGITS = 13  # 13-digit epochs are milliseconds (seconds reach 11 digits only in the year 5138)


def parse_time(raw: str) -> dt.datetime | None:
    """ISO-8601 (date, 'T' or space, optional seconds, fraction and offset; no offset = UTC) or epoch
    seconds (13 digits = milliseconds), as a UTC time; None when it is neither."""
    text = raw.strip()
    try:
        if _EPOCH.match(text):
            value = float(text)
            if len(text.lstrip("+-").split(".")[0]) >= _MS_DIGITS:
                value /= 1000
            return dt.datetime.fromtimestamp(value, dt.UTC)
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        return None
    return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)


def _add_context(kept: pl.DataFrame) -> pl.DataFrame:
    """thread_id, user_id as given; created_at parsed (each distinct value once); a note where the
    time could not be read. The comment is kept either way."""
    raw_times = kept["raw_time"].drop_nulls().unique().to_list()
    parsed = {t: parse_time(t) for t in raw_times}
    times = pl.Series(
        "created_at", [parsed.get(t) if t is not None else None for t in kept["raw_time"].to_list()], dtype=pl.Datetime("us", "UTC")
    )
    unreadable = kept["raw_time"].is_not_null() & times.is_null()
    note = pl.when(unreadable).then(pl.format("unreadable time {}; kept without a time", pl.col("raw_time").str.slice(0, 40)))
    return (
        kept.with_columns(
            pl.col("raw_thread").alias("thread_id"), times, pl.col("raw_user").alias("user_id"), pl.Series("_unreadable", unreadable)
        )
        .with_columns(note.otherwise(pl.lit(None, pl.String)).alias("time_note"))
        .drop("_unreadable")
    )


NORMALIZE_BATCH = 50000  # texts per batch


class Normalizer:
    """Batch function (pipeline/exec/executor.py): `text_norm` of each text."""

    def __init__(self, max_chars: int):
        self.max_chars = max_chars

    def __call__(self, batch: pl.DataFrame) -> pl.DataFrame:
        return pl.DataFrame(
            {"text_norm": [normalize_text(t[: self.max_chars]) for t in batch["text"].to_list()]}, schema={"text_norm": pl.String}
        )


def _make_ids_unique(table: pl.DataFrame) -> pl.DataFrame:
    """Keep every row of a repeated id: later copies get "~2", "~3"... and a note saying so."""
    occurrence = pl.int_range(pl.len()).over("comment_id") + 1
    table = table.with_columns(occurrence.alias("_occ"))
    new_id = pl.when(pl.col("_occ") > 1).then(pl.format("{}~{}", "comment_id", "_occ")).otherwise("comment_id")
    note = pl.when(pl.col("_occ") > 1).then(pl.format("duplicate comment_id {}; renamed", "comment_id")).otherwise(pl.lit(None, pl.String))
    return table.with_columns(new_id.alias("comment_id"), note.alias("id_note")).drop("_occ")


STAGE: Stage[IngestConfig] = Stage(
    name="ingest",
    version="2",
    config_section="ingest",
    code_modules=("pipeline.text.normalize", "pipeline.io.readers"),
    requires=("source_file", "source_row", "raw_id", "raw_text", "read_error", "raw_thread", "raw_time", "raw_user"),
    adds=("comment_id", "text", "text_norm", *CONTEXT_COLUMNS, "time_note"),
    run=run,
)

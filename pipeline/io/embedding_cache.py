"""Vectors cached by (model id, normalised-text hash), so a rerun embeds nothing it has seen.

Content-addressed, so one cache can be shared by every run and batch on a machine. Each write is
a new parquet shard written atomically; a killed run loses at most the shard it was writing.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import numpy as np
import polars as pl
import xxhash

from pipeline.io.fileio import atomic_write_parquet


def text_hash(text: str) -> int:
    return xxhash.xxh3_64_intdigest(text.encode("utf-8"))


class EmbeddingCache:
    def __init__(self, root: Path, model_id: str):
        self.dir = root / "embeddings" / re.sub(r"[^A-Za-z0-9._-]+", "_", model_id)

    def lookup(self, hashes: list[int]) -> dict[int, np.ndarray]:
        shards = sorted(self.dir.glob("shard-*.parquet"))
        if not shards or not hashes:
            return {}
        wanted = pl.Series(hashes, dtype=pl.UInt64)
        found = pl.scan_parquet(shards).filter(pl.col("text_hash").is_in(wanted.implode())).unique("text_hash", keep="first").collect()
        if found.height == 0:
            return {}
        vectors = found["vector"].to_numpy()
        return dict(zip(found["text_hash"].to_list(), vectors))

    def store(self, hashes: list[int], vectors: np.ndarray) -> None:
        if not hashes:
            return
        table = pl.DataFrame({"text_hash": pl.Series(hashes, dtype=pl.UInt64), "vector": vectors.astype(np.float32)})
        atomic_write_parquet(table, self.dir / f"shard-{uuid.uuid4().hex}.parquet")

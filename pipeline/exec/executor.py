"""Executors: where the map-like part of a stage runs.

A stage's map-like work (normalising texts, encoding them, MinHash signing, flag scoring) is a
*batch function*: a class whose constructor loads what it needs once (a model, the lexicons) and
whose call maps a polars batch to a polars batch of the same rows. The stage hands it to
`ctx.executor.map_batches`; everything global (quarantine, LSH grouping and union-find, topic
fitting, joins) stays in the stage, on the driver.

- `LocalExecutor` (default): one instance in this process, batch after batch, with a progress bar.
- `RayExecutor` (`--executor ray`, needs the `ray` extra): Ray Data `map_batches` with a pool of
  actors, each constructing the batch function once; on one machine or a Ray cluster
  (`RAY_ADDRESS`). Output rows keep the input order, so both executors give the same table.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Protocol

import polars as pl

from pipeline.exec.progress import chunks


class BatchFunction(Protocol):
    """`tick(rows)`, when given, is called as parts of a long batch finish, to move the bar."""

    def __init__(self, **kwargs: Any) -> None: ...
    def __call__(self, batch: pl.DataFrame, tick: Callable[[int], None] | None = None) -> pl.DataFrame: ...


class LocalExecutor:
    name = "local"

    def __init__(self, progress: bool = True):
        self.progress = progress

    def map_batches(
        self, fn_class: type[BatchFunction], table: pl.DataFrame, *, batch_size: int, desc: str, **fn_kwargs: Any
    ) -> pl.DataFrame:
        if table.height == 0:
            return fn_class(**fn_kwargs)(table)
        fn = fn_class(**fn_kwargs)
        ticks = "tick" in inspect.signature(fn.__call__).parameters
        parts = [
            fn(table[part], tick) if ticks else fn(table[part]) for part, tick in chunks(table.height, batch_size, desc, self.progress)
        ]
        return pl.concat(parts, how="vertical")

    def describe(self) -> dict:
        return {"name": self.name}

    def close(self) -> None:
        pass


def make_executor(name: str, progress: bool, ray_options: dict | None = None):
    if name == "local":
        return LocalExecutor(progress)
    if name == "ray":
        from pipeline.exec.ray_executor import RayExecutor

        return RayExecutor(progress, **(ray_options or {}))
    raise ValueError(f"unknown executor {name!r}; use 'local' or 'ray'")

"""Ray Data executor (`--executor ray`): map-like stage work on a pool of Ray actors.

Each map stage becomes `Dataset.map_batches` with a callable class, so every actor builds the
stage's batch function (loads its model) once and then maps batch after batch. Blocks come back
in input order (`preserve_order`), so the table equals the local executor's. Global work (LSH
grouping, union-find, topic fitting, joins) stays in the driver, as in `LocalExecutor`.

Without `run.ray_address` or $RAY_ADDRESS it starts a local Ray on this machine, quietly.
Install with `pip install -e '.[ray]'`.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import polars as pl

# Read when ray is imported or started: no usage-stats prompt, no dashboard logs, no auth token
# file, no progress bars unless asked for.
QUIET_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_DATA_DISABLE_PROGRESS_BARS": "1", "RAY_AUTH_MODE": "disabled", "RAY_DEDUP_LOGS": "0"}

log = logging.getLogger("pipeline")


class _Adapter:
    """The actor: builds the stage's batch function once; maps Arrow batches through polars."""

    def __init__(self, fn_class: type, fn_kwargs: dict):
        # One thread per actor: the actors themselves are the parallelism.
        os.environ.setdefault("POLARS_MAX_THREADS", "1")
        os.environ["OMP_NUM_THREADS"] = "1"  # the encoder's threads where embed.threads is 0
        try:
            import torch

            torch.set_num_threads(1)
        except ImportError:
            pass
        self.fn = fn_class(**fn_kwargs)

    def __call__(self, batch):
        return self.fn(pl.from_arrow(batch)).to_arrow()


class RayExecutor:
    name = "ray"

    def __init__(self, progress: bool = True, address: str | None = None, actors: int = 0):
        for k, v in QUIET_ENV.items():
            os.environ.setdefault(k, v)
        try:
            import ray
        except ImportError:
            raise RuntimeError("executor 'ray' needs Ray Data: pip install -e '.[ray]' (or run with --executor local)") from None
        self.ray = ray
        self.started_here = not ray.is_initialized()
        if self.started_here:
            # "local" starts a private Ray instead of joining whatever cluster happens to run here.
            address = address or os.environ.get("RAY_ADDRESS") or "local"
            ray.init(address=address, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False, configure_logging=False)
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        from ray.data import DataContext

        context = DataContext.get_current()
        context.execution_options.preserve_order = True  # the same row order as the local executor
        context.enable_progress_bars = progress
        context.print_on_execution_start = False
        context.enable_auto_log_stats = False
        # Fail with an error rather than wait for ever when actors cannot get CPUs.
        context.execution_no_progress_timeout_s = 600
        context.wait_for_min_actors_s = 600
        self.address = address or "an existing Ray of this process"
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        # Each stage is its own Dataset, so one pool at a time holds CPUs: at most one actor per CPU.
        self.actors = min(actors or cpus, cpus)
        log.info("ray: %d actors per map stage (%s)", self.actors, address or "local Ray")

    def map_batches(self, fn_class: type, table: pl.DataFrame, *, batch_size: int, desc: str, **fn_kwargs: Any) -> pl.DataFrame:
        if table.height == 0:
            return fn_class(**fn_kwargs)(table)
        import pyarrow as pa

        # The local executor's batches exactly: a model's floating-point results can depend on which
        # texts share a padded batch, so other batches could change low bits of the vectors.
        blocks = [table[i : i + batch_size].to_arrow() for i in range(0, table.height, batch_size)]
        ds = self.ray.data.from_arrow(blocks).map_batches(
            _Adapter,
            fn_constructor_kwargs={"fn_class": fn_class, "fn_kwargs": fn_kwargs},
            compute=self.ray.data.ActorPoolStrategy(size=self.actors),
            num_cpus=1,
            # Copies each batch: polars cannot read a sliced fixed-size-list column with nulls.
            batch_format="pyarrow",
            batch_size=batch_size,
            zero_copy_batch=False,
        )
        parts = self.ray.get(ds.to_arrow_refs())
        return pl.from_arrow(pa.concat_tables(parts, promote_options="default"))

    def describe(self) -> dict:
        """For the manifest: which Ray ran the work, on how many nodes."""
        nodes = [n for n in self.ray.nodes() if n.get("Alive")]
        cpus = {n["NodeID"][:12]: n.get("Resources", {}).get("CPU", 0) for n in nodes}
        return {"name": self.name, "address": self.address, "nodes": len(nodes), "cpus_per_node": cpus, "actors": self.actors}

    def close(self) -> None:
        if self.started_here and self.ray.is_initialized():
            self.ray.shutdown()

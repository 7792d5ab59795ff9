"""The stage contract: a named, versioned, pure function from a polars table to a table.

A stage declares the columns it needs and the columns it adds; the runner checks both, so a stage
that forgets a column fails at its own boundary instead of three stages later. Stages never read
or write files; what they need from outside (models, caches, state) comes through `StageContext`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import polars as pl

from pipeline.config import PROJECT_ROOT

if TYPE_CHECKING:
    from pipeline.config import EmbedConfig
    from pipeline.exec.executor import LocalExecutor
    from pipeline.exec.ray_executor import RayExecutor
    from pipeline.models.embedder import Embedder


@dataclass
class StageContext:
    """What a stage may use besides its table and config section."""

    seed: int
    cache_dir: Path
    state_dir: Path | None
    progress: bool = True
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("pipeline"))
    # Where the map-like part of a stage runs (pipeline/exec/executor.py): in this process, or on Ray.
    executor: LocalExecutor | RayExecutor | None = None
    # The run's embed section: which model made the `embedding` column (the flag stage compares it
    # with the model its conspiracy examples were embedded with).
    embed_config: EmbedConfig | None = None
    # Where the flag models live (`flag.models_dir`, default models/): the embed stage's offence
    # logits and the flag stage read the same encoder from here.
    models_dir: Path = field(default_factory=lambda: PROJECT_ROOT / "models")
    # Facts a stage reports for the manifest (model versions, outlier share, ...).
    facts: dict[str, Any] = field(default_factory=dict)
    # Side tables a stage produces besides its main table (e.g. topics), written by the runner.
    # A side table named like one of the stage's `state` entries is its new state.
    side_tables: dict[str, pl.DataFrame] = field(default_factory=dict)
    # State from earlier batches (read from the state directory by the runner), by name.
    state: dict[str, pl.DataFrame] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.executor is None:
            from pipeline.exec.executor import LocalExecutor

            self.executor = LocalExecutor(self.progress)

    @cached_property
    def embedder(self) -> Embedder | None:
        """The run's embedding model as a service (pipeline/models/embedder.py), shared by stages."""
        from pipeline.models.embedder import Embedder

        return None if self.embed_config is None else Embedder(self.embed_config, self.cache_dir, self.progress)


# A stage's config section (pipeline/config.py: IngestConfig, EmbedConfig, ...).
SectionT = TypeVar("SectionT")


@dataclass(frozen=True)
class Stage(Generic[SectionT]):
    """`Stage[FlagConfig]`: a stage whose `run` (and `resources`) read the flag section."""

    name: str
    version: str  # part of the cache key with the source of its modules; bump for changes outside them
    config_section: str  # the config section it reads; part of its fingerprint
    requires: tuple[str, ...]
    adds: tuple[str, ...]
    run: Callable[[pl.DataFrame, SectionT, StageContext], pl.DataFrame]
    # Project modules besides its own whose code shapes its output; their source is fingerprinted
    # too, so editing them reruns the stage without anyone remembering to bump `version`.
    code_modules: tuple[str, ...] = ()
    # What else its output depends on besides code, config and input columns (e.g. model files):
    # a function of its config section and the run's context returning a fingerprint string.
    resources: Callable[[SectionT, StageContext], str] | None = None
    # Names of the state tables it reads from earlier batches and returns updated (side tables).
    state: tuple[str, ...] = ()

    def code_fingerprint(self) -> str:
        h = hashlib.sha256(self.version.encode())
        for name in (self.run.__module__, *self.code_modules):
            spec = importlib.util.find_spec(name)
            h.update(name.encode() + Path(spec.origin).read_bytes())
        return h.hexdigest()[:16]

    def check_input(self, table: pl.DataFrame) -> None:
        missing = [c for c in self.requires if c not in table.columns]
        if missing:
            raise RuntimeError(f"stage {self.name!r} needs columns {missing} that earlier stages did not add")

    def check_output(self, table: pl.DataFrame) -> None:
        missing = [c for c in self.adds if c not in table.columns]
        if missing:
            raise RuntimeError(f"stage {self.name!r} did not add the columns it declares: {missing}")

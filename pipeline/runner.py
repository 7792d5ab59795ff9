"""The runner: reads inputs, runs the stage graph with caching, writes every output atomically.

Each stage's result is stored in DIR/_stages/<stage>.parquet with a fingerprint made of the
stage's name and version, its config section(s), and the fingerprints of the stages whose columns
it reads. A rerun whose fingerprint matches loads the stored result instead of computing it, so a
changed HDBSCAN setting reruns topics and export, never embed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import platform
import time
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import polars as pl

from pipeline.config import Config, stable_hash
from pipeline.desk import store as desk_store
from pipeline.exec.executor import make_executor
from pipeline.io import decisions, readers
from pipeline.io.fileio import atomic_write_csv, atomic_write_json, atomic_write_parquet, file_sha256
from pipeline.io.lock import DirectoryLock
from pipeline.report import page as report
from pipeline.scoring.score import CATEGORIES, models_dir_of
from pipeline.stage import Stage, StageContext
from pipeline.stages import campaigns, dedup, embed, export, flag, ingest, topics

log = logging.getLogger("pipeline")
STAGES: tuple[Stage, ...] = (ingest.STAGE, embed.STAGE, dedup.STAGE, campaigns.STAGE, topics.STAGE, flag.STAGE)
LIBRARIES = (
    "polars",
    "torch",
    "sentence-transformers",
    "transformers",
    "umap-learn",
    "hdbscan",
    "jieba",
    "datasketch",
    "scikit-learn",
    "opencc-python-reimplemented",
    "pydantic",
    "numpy",
)


@dataclass
class StageRecord:
    name: str
    status: str  # "ran" or "cached"
    rows_in: int
    rows_out: int
    seconds: float
    fingerprint: str
    facts: dict = field(default_factory=dict)


def apply_threads(threads: int) -> None:
    """`embed.threads`: torch's CPU threads for this process, set once by the runner (0 = torch's
    default, all cores); Ray actors use one thread each (pipeline/exec/ray_executor.py)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def default_cache_dir(cfg: Config) -> Path:
    from pipeline.models.e5_model import default_cache_dir as e5_default

    return cfg.run.cache_dir or e5_default()


class Runner:
    def __init__(self, inputs: list[Path], out_dir: Path, cfg: Config, decisions: Path | None = None):
        self.inputs, self.out_dir, self.cfg = inputs, out_dir, cfg
        self.decisions_file = decisions
        if decisions is not None and not decisions.exists():
            raise readers.InputFileError(f"{decisions}: decisions file not found; check the --decisions path")
        if out_dir.exists() and not out_dir.is_dir():
            raise readers.InputFileError(f"{out_dir}: is a file; --output must be a directory (new or from an earlier run)")
        self.stage_dir = out_dir / "_stages"
        self.records: list[StageRecord] = []
        self.executor_info: dict = {}

    def run(self) -> dict:
        started = time.time()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        state_dir = self.cfg.run.state_dir
        with ExitStack() as locks:
            locks.enter_context(DirectoryLock(self.out_dir))
            if state_dir is not None:
                state_dir.mkdir(parents=True, exist_ok=True)
                if state_dir.resolve() != self.out_dir.resolve():
                    locks.enter_context(DirectoryLock(state_dir))
            self._remove_leftover_temp_files()
            input_info = [{"path": str(p), "sha256": file_sha256(p), "bytes": p.stat().st_size} for p in self._checked_inputs()]
            executor = locks.enter_context(
                closing(
                    make_executor(
                        self.cfg.run.executor,
                        self.cfg.run.progress,
                        {"address": self.cfg.run.ray_address, "actors": self.cfg.run.ray_actors},
                    )
                )
            )
            ctx = StageContext(
                seed=self.cfg.run.seed,
                cache_dir=default_cache_dir(self.cfg),
                state_dir=state_dir,
                progress=self.cfg.run.progress,
                executor=executor,
                embed_config=self.cfg.embed,
                models_dir=models_dir_of(self.cfg.flag),
            )
            self.executor_info = executor.describe()
            apply_threads(self.cfg.embed.threads)
            table, side = self._run_stages(input_info, ctx)
            outputs = self._export(table, side)
            self._save_state(side)
            if self.cfg.run.state_dir is not None and side.get(decisions.STATE_NAME) is not None:
                atomic_write_parquet(side[decisions.STATE_NAME], self.cfg.run.state_dir / f"{decisions.STATE_NAME}.parquet")
            manifest = self._manifest(input_info, outputs, started)
            report.build(self.out_dir, manifest)
            manifest["outputs"]["review_page"] = "review/index.html"
            atomic_write_json(manifest, self.out_dir / "manifest.json")  # last: marks the run complete
        return manifest

    def _remove_leftover_temp_files(self) -> None:
        """A run killed with -9 cannot clean up the temp file it was writing; we hold the lock, so
        any temp file here is such a leftover (complete files are never named like this)."""
        dirs = [self.out_dir, self.out_dir / "review", self.stage_dir]
        if self.cfg.run.state_dir is not None:
            dirs.append(self.cfg.run.state_dir)
        for d in dirs:
            for leftover in d.glob(".*.tmp"):
                log.warning("removing %s left by an interrupted run", leftover)
                leftover.unlink(missing_ok=True)

    def _state_path(self, name: str) -> Path | None:
        state_dir = self.cfg.run.state_dir
        return None if state_dir is None else state_dir / f"{name}.parquet"

    def _load_state(self, stage: Stage) -> tuple[dict[str, pl.DataFrame], str]:
        """The stage's state tables from earlier batches, and a fingerprint of them."""
        tables, hashes = {}, []
        for name in stage.state:
            path = self._state_path(name)
            model_from = getattr(getattr(self.cfg, stage.config_section), "model_from", None)
            if (path is None or not path.exists()) and model_from:
                # `--topics-from`: another run's saved model, used until this state directory has its own.
                path = model_from
                path = path / f"{name}.parquet" if path.is_dir() else path
                if not path.exists():
                    raise readers.InputFileError(f"{path}: no saved {name} there; pass the state directory of a run that had one")
            if path is not None and path.exists():
                tables[name] = pl.read_parquet(path)
                hashes.append(file_sha256(path))
            else:
                hashes.append("none")
        return tables, stable_hash(hashes)

    def _save_state(self, side: dict[str, pl.DataFrame]) -> None:
        # After the outputs: a run killed before this point leaves the state as it was.
        for stage in STAGES:
            for name in stage.state:
                path = self._state_path(name)
                if path is not None and name in side:
                    atomic_write_parquet(side[name], path)

    def _checked_inputs(self) -> list[Path]:
        for p in self.inputs:
            readers.check_file(p)
        return self.inputs

    def _run_stages(self, input_info: list[dict], ctx: StageContext) -> tuple[pl.DataFrame, dict]:
        # Paths count too: generated ids are made from file names.
        fingerprints: dict[str, str] = {"input": stable_hash([(i["path"], i["sha256"]) for i in input_info])}
        producer = {c: "input" for c in readers.RAW_SCHEMA}
        table: pl.DataFrame | None = None
        side: dict[str, pl.DataFrame] = {}
        for stage in STAGES:
            upstream = sorted({producer[c] for c in stage.requires})
            section_cfg = getattr(self.cfg, stage.config_section)
            resources = stage.resources(section_cfg, ctx) if stage.resources else ""
            state, state_fp = self._load_state(stage)
            fp = stable_hash(
                [
                    stage.name,
                    stage.code_fingerprint(),
                    self.cfg.section_hash(stage.config_section),
                    resources,
                    state_fp,
                    ctx.seed,
                    [fingerprints[u] for u in upstream],
                ]
            )
            fingerprints[stage.name] = fp
            t0 = time.time()
            cached = self._load_cached(stage, fp)
            if table is None:
                if cached is None:
                    ing = self.cfg.ingest
                    table = readers.read_inputs(self.inputs, ing.id_column, ing.text_column, ing.thread_comments_start, ing.context_columns)
                    self._warn_empty_inputs(table)
                rows_in = table.height if cached is None else cached[2].get("rows_in", 0)
            else:
                rows_in = table.height
            if cached is not None:
                new_cols, stage_side, facts = cached
                status = "cached"
            else:
                log.info("stage %s: running on %d rows", stage.name, rows_in)
                stage.check_input(table)
                ctx.facts, ctx.side_tables, ctx.state = {}, {}, state
                result = stage.run(table, section_cfg, ctx)
                stage.check_output(result)
                if stage is not STAGES[0] and result.height != table.height:
                    raise RuntimeError(f"stage {stage.name!r} changed the row count ({table.height} -> {result.height})")
                new_cols = result if stage is STAGES[0] else result.select([c for c in result.columns if c not in table.columns])
                stage_side, facts = dict(ctx.side_tables), dict(ctx.facts) | {"rows_in": rows_in}
                self._store(stage, fp, new_cols, stage_side, facts)
                status = "ran"
            table = new_cols if stage is STAGES[0] else pl.concat([table, new_cols], how="horizontal")
            if stage.state:
                # State changes every batch, so later stages key on what this stage produced instead:
                # a rerun that gives the same columns reuses everything downstream.
                content = hashlib.sha256(new_cols.hash_rows(seed=0).to_numpy().tobytes()).hexdigest()
                fingerprints[stage.name] = stable_hash([content, new_cols.columns])
            side.update(stage_side)
            for c in new_cols.columns:
                producer[c] = stage.name
            facts = {k: v for k, v in facts.items() if k != "rows_in"}
            self.records.append(StageRecord(stage.name, status, rows_in, table.height, round(time.time() - t0, 3), fp, facts))
            log.info("stage %s: %s in %.1fs", stage.name, status, time.time() - t0)
        return table, side

    def _warn_empty_inputs(self, raw: pl.DataFrame) -> None:
        # An empty night is normal for a scheduler (exit 0), but a person should see why nothing came out.
        seen = set(raw["source_file"].unique().to_list())
        for p in self.inputs:
            if str(p) not in seen:
                log.warning("%s: no comments in this file%s", p, "; writing the outputs with zero rows" if raw.height == 0 else "")

    def _load_cached(self, stage: Stage, fp: str):
        meta_path = self.stage_dir / f"{stage.name}.json"
        if not meta_path.exists():
            return None
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("fingerprint") != fp:
                return None
            main = pl.read_parquet(self.stage_dir / f"{stage.name}.parquet")
            side = {n: pl.read_parquet(self.stage_dir / f"{stage.name}.{n}.parquet") for n in meta.get("side", [])}
        except (OSError, ValueError, pl.exceptions.PolarsError) as e:
            log.warning("stage %s: stored result unreadable (%s); recomputing", stage.name, e)
            return None
        return main, side, meta.get("facts", {})

    def _store(self, stage: Stage, fp: str, table: pl.DataFrame, side: dict[str, pl.DataFrame], facts: dict) -> None:
        # Data first, then the fingerprint file: a kill in between leaves a result that is not trusted.
        atomic_write_parquet(table, self.stage_dir / f"{stage.name}.parquet")
        for name, t in side.items():
            atomic_write_parquet(t, self.stage_dir / f"{stage.name}.{name}.parquet")
        atomic_write_json({"fingerprint": fp, "side": sorted(side), "facts": facts}, self.stage_dir / f"{stage.name}.json")

    def _export(self, table: pl.DataFrame, side: dict[str, pl.DataFrame]) -> dict[str, str]:
        t0 = time.time()
        # Decisions: with a state directory, its desk database (the --decisions file is recorded
        # there as an import); without one, the --decisions file alone.
        new = decisions.read_file(self.decisions_file, table.select("comment_id", "dup_group")) if self.decisions_file else None
        if self.cfg.run.state_dir is not None:
            name = self.decisions_file.name if self.decisions_file else ""
            decided = desk_store.decisions_for_run(self.cfg.run.state_dir, new, name)
        else:
            decided = decisions.merge(new)
        side[decisions.STATE_NAME] = decided
        built = export.build(table, side["topics"], self.cfg.export, decided)
        out = self.out_dir
        atomic_write_parquet(built["comments"], out / "comments.parquet")
        atomic_write_parquet(built["topics"], out / "topics.parquet")
        atomic_write_parquet(side["campaigns"], out / "campaigns.parquet")
        atomic_write_parquet(built["review_queue"], out / "review" / "queue.parquet")
        atomic_write_csv(built["review_queue_csv"], out / "review" / "queue.csv", bom=self.cfg.export.csv_bom)
        atomic_write_parquet(report.map_points(table, self.cfg.run.seed), out / "review" / "map.parquet")
        files = {
            "comments": "comments.parquet",
            "topics": "topics.parquet",
            "campaigns": "campaigns.parquet",
            "review_queue": "review/queue.parquet",
            "review_queue_csv": "review/queue.csv",
        }
        quarantine = side.get("quarantine")
        if quarantine is not None and quarantine.height:
            atomic_write_parquet(quarantine, out / "quarantine.parquet")
            files["quarantine"] = "quarantine.parquet"
        elif (out / "quarantine.parquet").exists():
            (out / "quarantine.parquet").unlink()  # left from an earlier run of other inputs
        comments = built["comments"]
        self.records.append(
            StageRecord(
                "export",
                "ran",
                table.height,
                comments.height,
                round(time.time() - t0, 3),
                "",
                {
                    "review_groups": built["review_queue"].height,
                    "decided_groups": int(comments.filter(pl.col("decision").is_not_null())["dup_group"].n_unique()),
                },
            )
        )
        self.summary = {
            "rows_in": self.records[0].rows_in,
            "kept": comments.height,
            "quarantined": 0 if quarantine is None else quarantine.height,
            "dup_groups": comments["dup_group"].n_unique(),
            "flagged": {c: int(comments[f"flag_{c}"].sum()) for c in CATEGORIES} | {"campaign": int(comments["flag_campaign"].sum())},
            "needs_review": int(comments["needs_review"].sum()),
            "review_groups": built["review_queue"].height,
            "topics": int((built["topics"]["topic_id"] >= 0).sum()),
        }
        return files

    def _manifest(self, input_info: list[dict], files: dict[str, str], started: float) -> dict:
        now = dt.datetime.now(dt.UTC)
        config = self.cfg.model_dump(mode="json")
        facts = {r.name: r.facts for r in self.records}
        return {
            "run_id": f"{now:%Y%m%dT%H%M%SZ}-{self.cfg.hash()[:6]}",
            "finished_at": now.isoformat(timespec="seconds"),
            "seconds": round(time.time() - started, 3),
            "inputs": input_info,
            "config": config,
            "config_hash": self.cfg.hash(),
            "summary": self.summary,
            "stages": [r.__dict__ for r in self.records],
            "executor": self.executor_info,
            "models": {
                "embedding": facts.get("embed", {}).get("embed_model"),
                "offence": facts.get("flag", {}).get("offence_model_version"),
            },
            "outputs": files,
            "libraries": {name: _version(name) for name in LIBRARIES},
            "python": platform.python_version(),
            "pid": os.getpid(),
        }


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None

"""Atomic writes: a file appears complete under its name, or not at all (kill -9 safe)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temp path beside `target`; on success fsync it and rename it over `target`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o644)
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_parquet(table: pl.DataFrame, target: Path) -> None:
    with atomic_path(target) as tmp:
        table.write_parquet(tmp)


def atomic_write_text(text: str, target: Path, encoding: str = "utf-8") -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding=encoding)


def atomic_write_json(obj: Any, target: Path) -> None:
    atomic_write_text(json.dumps(obj, ensure_ascii=False, indent=2, default=str) + "\n", target)


def atomic_write_csv(table: pl.DataFrame, target: Path, bom: bool) -> None:
    with atomic_path(target) as tmp:
        table.write_csv(tmp, include_bom=bom)


def replace_dir(tmp: Path, target: Path) -> None:
    """Swap a finished temp folder into place, so a reader never sees a half-written model."""
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def file_sha256(path: Path) -> str:
    """The file's sha256 in hex, read in 1 MiB blocks (model weights are hundreds of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()

import json
import os
import subprocess
import sys

import polars as pl
import pytest

from pipeline.io.fileio import atomic_write_parquet, atomic_write_text
from pipeline.io.lock import DirectoryLock, LockedError


def test_second_lock_is_refused_and_released(tmp_path):
    with DirectoryLock(tmp_path):
        with pytest.raises(LockedError, match="in use by another run"):
            with DirectoryLock(tmp_path):
                pass
    with DirectoryLock(tmp_path):  # released on exit
        pass
    assert not (tmp_path / ".lock").exists()


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    (tmp_path / ".lock").write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname()}))
    with DirectoryLock(tmp_path):
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()


def test_atomic_writes_leave_no_temp_files(tmp_path):
    atomic_write_text("hello", tmp_path / "a.txt")
    atomic_write_parquet(pl.DataFrame({"x": [1]}), tmp_path / "sub" / "b.parquet")
    assert (tmp_path / "a.txt").read_text() == "hello"
    assert pl.read_parquet(tmp_path / "sub" / "b.parquet")["x"].to_list() == [1]
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.txt", "b.parquet", "sub"]


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "a.parquet"
    atomic_write_parquet(pl.DataFrame({"x": [1]}), target)
    with pytest.raises(pl.exceptions.PolarsError):
        atomic_write_parquet(pl.DataFrame({"x": [object()]}), target)  # cannot be written
    assert pl.read_parquet(target)["x"].to_list() == [1]
    assert [p.name for p in tmp_path.iterdir()] == ["a.parquet"]

"""build_once: the cache mechanism both model builds (e5 conversion, static distillation) rely on."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from pipeline.models.model_cache import build_once


def complete(folder: Path) -> bool:
    return (folder / "done").is_file()


def write_done(tmp: Path) -> None:
    (tmp / "weights").write_text("w")
    (tmp / "done").write_text("ok")


def test_builds_once_then_reuses(tmp_path: Path) -> None:
    final = tmp_path / "models" / "m"
    assert build_once(final, complete, write_done) is True
    assert complete(final)
    assert build_once(final, complete, lambda tmp: pytest.fail("rebuilt a complete folder")) is False


def test_failed_build_leaves_nothing_behind(tmp_path: Path) -> None:
    final = tmp_path / "m"

    def half_then_fail(tmp: Path) -> None:
        (tmp / "weights").write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        build_once(final, complete, half_then_fail)
    assert not final.exists()
    assert not list(tmp_path.glob(".m.tmp-*"))


def test_killed_build_and_incomplete_folder_are_replaced(tmp_path: Path) -> None:
    final = tmp_path / "m"
    (tmp_path / ".m.tmp-killed").mkdir()
    final.mkdir()
    (final / "weights").write_text("from a partial copy, no marker")
    assert build_once(final, complete, write_done) is True
    assert complete(final) and (final / "weights").read_text() == "w"
    assert not list(tmp_path.glob(".m.tmp-*"))


def _build_in_child(final: str, log: str) -> None:
    def build(tmp: Path) -> None:
        with open(log, "a") as f:
            f.write("built\n")
        write_done(tmp)

    build_once(Path(final), complete, build)


def test_concurrent_processes_build_once(tmp_path: Path) -> None:
    final, log = tmp_path / "m", tmp_path / "log"
    ctx = multiprocessing.get_context("spawn")
    children = [ctx.Process(target=_build_in_child, args=(str(final), str(log))) for _ in range(3)]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
    assert [c.exitcode for c in children] == [0, 0, 0]
    assert log.read_text() == "built\n"
    assert complete(final)

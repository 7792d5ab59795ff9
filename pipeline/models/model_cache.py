"""Build a model folder into the local cache once, safely across processes and kills.

Both the converted e5 model and the distilled static model are built on first use. A build runs
into a temp dir that is renamed into place when finished, so a reader sees either nothing or the
whole folder; a file lock makes a second process wait for the first build instead of doing its
own; what a killed build left behind is cleared before the next one starts.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def build_once(final: Path, is_complete: Callable[[Path], bool], build: Callable[[Path], None]) -> bool:
    """Make sure `final` holds a complete folder, running `build(tmp_dir)` if it does not.

    Returns True when this call built it, False when it was already there (or another process
    finished building it while this one waited)."""
    if is_complete(final):
        return False
    final.parent.mkdir(parents=True, exist_ok=True)
    with lock(final.parent / f".{final.name}.lock"):  # the kernel drops it if the holder is killed
        if is_complete(final):
            return False
        remove_leftovers(final)
        build_atomically(final, build)
    return True


@contextmanager
def lock(path: Path) -> Iterator[None]:
    with open(path, "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def remove_leftovers(final: Path) -> None:
    """Clear what killed builds left behind. Runs with the build lock held, so no live build owns
    a temp dir of this folder."""
    for tmp in final.parent.glob(f".{final.name}.tmp-*"):
        shutil.rmtree(tmp, ignore_errors=True)
    if final.exists():  # a folder that failed is_complete: never trust it, rebuild
        trash = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
        os.replace(final, trash / "old")
        shutil.rmtree(trash, ignore_errors=True)


def build_atomically(final: Path, build: Callable[[Path], None]) -> None:
    """`build(tmp_dir)` into a temp dir next to `final`, then renamed to `final`."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        build(tmp)
        os.replace(tmp, final)  # atomic: readers see either nothing or the finished folder
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

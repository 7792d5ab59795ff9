"""One run at a time per directory: a lock file holding the owner's pid and host.

A lock whose process no longer exists (a killed run) is stale and taken over, with a warning.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path

log = logging.getLogger("pipeline")


class LockedError(Exception):
    """Another live run holds the directory."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class DirectoryLock:
    def __init__(self, directory: Path):
        self.path = directory / ".lock"

    def __enter__(self) -> DirectoryLock:
        me = json.dumps({"pid": os.getpid(), "host": socket.gethostname()})
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self._take_over_if_stale():
                    raise
                continue
            with os.fdopen(fd, "w") as f:
                f.write(me)
            return self
        raise LockedError(f"{self.path.parent}: could not take the lock at {self.path}")

    def _take_over_if_stale(self) -> bool:
        try:
            owner = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            owner = {}
        pid, host = owner.get("pid"), owner.get("host")
        if isinstance(pid, int) and host == socket.gethostname() and _alive(pid):
            raise LockedError(
                f"{self.path.parent} is in use by another run (pid {pid}); wait for it to finish, or use another --output directory"
            )
        if isinstance(pid, int) and host not in (None, socket.gethostname()):
            raise LockedError(f"{self.path.parent} is locked by a run on host {host} (pid {pid}); if that run is dead, delete {self.path}")
        log.warning("removing stale lock %s (pid %s is gone)", self.path, pid)
        self.path.unlink(missing_ok=True)
        return True

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)

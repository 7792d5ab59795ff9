"""Helpers for the desk tests: a real `python -m pipeline serve` process on a free loopback port,
plain HTTP calls to it (urllib, as a script would make them), and a small run to serve."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from conftest import PROJECT, SEED, run_cli, run_pipeline, seed_comments, write_jsonl

# Flagged comments whose text is markup: the desk must show them as text and run nothing.
HOSTILE = ["<script>window.__pwned = 1</script>你这个傻逼，滚出去", '<img src=x onerror="window.__pwned = 1">垃圾东西，去死吧']


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Desk:
    """`python -m pipeline serve` as a user starts it."""

    def __init__(self, state: Path, run: Path):
        self.state, self.run, self.proc = state, run, None
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> Desk:
        cmd = [sys.executable, "-m", "pipeline", "serve", "--state-dir", str(self.state), "--run", str(self.run), "--port", str(self.port)]
        self.proc = subprocess.Popen(cmd, cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 90
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited with {self.proc.returncode}: {self.proc.stdout.read()}")
            try:
                urllib.request.urlopen(self.url + "/login", timeout=2).read()
                return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("serve did not answer within 90 s")

    def kill(self) -> None:
        """kill -9: no shutdown handler runs."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)

    def __enter__(self) -> Desk:
        return self.start()

    def __exit__(self, *_):
        self.stop()


def call(desk: Desk, method: str, path: str, token: str | None = None, body=None, headers: dict | None = None, raw: bytes | None = None):
    """(status, parsed JSON or text) of one request; HTTP errors are returned, not raised."""
    head = dict(headers or {})
    data = raw
    if body is not None:
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        head.setdefault("Content-Type", "application/json")
    if token is not None:
        head["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(desk.url + path, data=data, method=method, headers=head)
    try:
        with urllib.request.urlopen(req, timeout=60) as res:
            status, text = res.status, res.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode("utf-8")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def queue_ids(desk: Desk, token: str, **filters) -> list[str]:
    """Every dup_group the queue lists for a filter, page by page."""
    out, offset = [], 0
    while True:
        query = urllib.parse.urlencode({**filters, "offset": offset, "limit": 100})
        status, page = call(desk, "GET", f"/api/queue?{query}", token)
        assert status == 200, page
        out += [g["dup_group"] for g in page["groups"]]
        offset += 100
        if offset >= page["total"]:
            return out


def add_moderator(state: Path, name: str) -> str:
    result = run_cli("moderator", "add", name, "--state-dir", str(state))
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


# The desk reads a run's outputs, whichever mode made them: fast mode keeps these tests quick.
FAST = PROJECT / "configs" / "fast.yaml"


def next_run(src: Path, out: Path, state: Path, decisions: Path | None = None) -> dict:
    """The following `pipeline run --state-dir`, which applies the desk's decisions."""
    return run_pipeline([src], out, f"run.state_dir={state}", decisions=decisions, config=FAST)


def make_run(root: Path) -> tuple[Path, Path, Path]:
    """The seed thread plus the hostile comments, run once with a state directory: (input, run, state)."""
    rows = [{"comment_id": f"s{i}", "text": t} for i, t in enumerate(seed_comments())]
    rows += [{"comment_id": f"h{i}", "text": t} for i, t in enumerate(HOSTILE)]
    src = write_jsonl(root / "comments.jsonl", rows)
    state, out = root / "state", root / "run"
    next_run(src, out, state)
    return src, out, state


__all__ = ["SEED", "Desk", "add_moderator", "call", "make_run", "next_run", "queue_ids"]

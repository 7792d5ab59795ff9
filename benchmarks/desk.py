"""The moderators' desk under load, on loopback: requests per second with two moderators deciding at
once, and the size of desk.sqlite after 10,000 decisions.

    python benchmarks/desk.py [--run DIR | --input FILE --rows N] [--seconds 20] [--decisions 10000]

Without --run it runs the pipeline first: on the first --rows comments of --input in fast mode
(default ../shared/bench/weibo_checked_comments.parquet, 100,000 rows), for a realistic queue. A real `python -m pipeline serve`
process answers; two client threads (one per moderator, each with its own token from `moderator
add`) post one decision per request, as the page does, for --seconds; then two more read queue
pages for --seconds. Every decision is a committed transaction (WAL, synchronous=FULL). Then a
fresh state directory takes --decisions decisions through the API (lists of 100) and the file's
size is measured after a WAL checkpoint.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
BENCH = PROJECT.parent / "shared" / "bench" / "weibo_checked_comments.parquet"


def cli(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=PROJECT, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"pipeline {args[0]} failed: {result.stderr[-2000:]}")
    return result.stdout


def start(state: Path, run: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "serve", "--state-dir", str(state), "--run", str(run), "--port", str(port)],
        cwd=PROJECT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(600):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=2).read()
            return proc
        except OSError:
            time.sleep(0.2)
    sys.exit("serve did not start")


def request(port: int, token: str, path: str, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method="POST" if data else "GET")
    req.add_header("Authorization", f"Bearer {token}")
    if data:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=60) as res:
        return json.loads(res.read())


def load(port: int, tokens: list[str], seconds: float, work) -> tuple[int, float]:
    counts = [0] * len(tokens)
    deadline = time.perf_counter() + seconds

    def client(i):
        n = 0
        while time.perf_counter() < deadline:
            work(port, tokens[i], n)
            n += 1
        counts[i] = n

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(tokens))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, help="a finished run to serve (default: one made now from --input)")
    ap.add_argument("--input", type=Path, default=BENCH)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--decisions", type=int, default=10_000)
    ap.add_argument("--port", type=int, default=8799)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-desk-") as tmp:
        tmp = Path(tmp)
        run = args.run
        if run is None:
            import polars as pl

            run, src = tmp / "run", tmp / "input.parquet"
            pl.read_parquet(args.input).head(args.rows).select("comment_id", "text").write_parquet(src)
            cli("run", "--input", str(src), "--output", str(run), "--config", str(PROJECT / "configs" / "fast.yaml"), "--quiet")
        state = tmp / "state"
        tokens = [cli("moderator", "add", name, "--state-dir", str(state)).strip().splitlines()[-1] for name in ("ana", "bo")]
        proc = start(state, run, args.port)
        try:
            groups = request(args.port, tokens[0], "/api/queue?ids_only=true&decided=all")["dup_groups"]

            def decide(port, token, n):
                request(port, token, "/api/decisions", {"dup_group": groups[n % len(groups)], "decision": ("remove", "approve")[n % 2]})

            def read(port, token, n):
                request(port, token, f"/api/queue?decided=all&limit=50&offset={50 * (n % max(1, len(groups) // 50))}")

            decided, decide_s = load(args.port, tokens, args.seconds, decide)
            reads, read_s = load(args.port, tokens, args.seconds, read)
        finally:
            proc.terminate()
            proc.wait()
        db = sqlite3.connect(state / "desk.sqlite")
        audit_rows = db.execute("SELECT COUNT(*) FROM audit").fetchone()[0]
        db.close()

        state2 = tmp / "state2"
        token = cli("moderator", "add", "ana", "--state-dir", str(state2)).strip().splitlines()[-1]
        proc = start(state2, run, args.port + 1)
        try:
            for i in range(0, args.decisions, 100):
                batch = [
                    {
                        "dup_group": groups[(i + j) % len(groups)],
                        "decision": ("remove", "approve", "escalate")[(i + j) % 3],
                        "note": f"note {i + j}",
                    }
                    for j in range(min(100, args.decisions - i))
                ]
                request(args.port + 1, token, "/api/decisions", batch)
        finally:
            proc.terminate()
            proc.wait()
        db = sqlite3.connect(state2 / "desk.sqlite")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        audit_total = db.execute("SELECT COUNT(*) FROM audit").fetchone()[0]
        db.close()
        size = (state2 / "desk.sqlite").stat().st_size
        print(
            json.dumps(
                {
                    "comments_in_run": args.rows if args.run is None else None,
                    "groups_served": len(groups),
                    "moderators": 2,
                    "decisions_posted": decided,
                    "audit_rows": audit_rows,
                    "decision_requests_per_s": round(decided / decide_s, 1),
                    "queue_page_requests_per_s": round(reads / read_s, 1),
                    "decisions_stored": audit_total,
                    "db_bytes": size,
                    "db_mb": round(size / 1e6, 2),
                    "bytes_per_decision": round(size / max(1, audit_total)),
                }
            )
        )


if __name__ == "__main__":
    main()

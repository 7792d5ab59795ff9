"""Unattended-run behaviour on real comments: cold run, identical rerun, one-setting rerun, kill -9.

    python benchmarks/reruns.py [--input ../shared/bench/weibo_checked_comments.parquet] [--rows 3000] [--kill-rows 4000]

Each run is a separate `python -m pipeline run` process with a fresh cache directory (so the cold
run really encodes everything). Prints one JSON line per step: seconds, the status of each stage
from manifest.json, and checks (identical table, rows accounted for, every parquet readable).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]


def write_sample(src: Path, rows: int, dest: Path) -> Path:
    df = pl.read_parquet(src).head(rows)
    text = "text" if "text" in df.columns else df.columns[-1]
    df.select(pl.int_range(pl.len()).cast(pl.String).alias("comment_id"), pl.col(text).alias("text")).write_ndjson(dest)
    return dest


def run(inp: Path, out: Path, env: dict, *extra: str) -> tuple[float, dict]:
    t0 = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", "--input", str(inp), "--output", str(out), "--quiet", *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        raise SystemExit(res.stderr)
    manifest = json.loads((out / "manifest.json").read_text())
    return time.perf_counter() - t0, {s["name"]: s["status"] for s in manifest["stages"]}


def all_readable(out: Path) -> bool:
    for p in out.rglob("*.parquet"):
        pl.read_parquet(p)
    return not list(out.rglob(".*.tmp*"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--input", type=Path, default=ROOT.parent / "shared" / "bench" / "weibo_checked_comments.parquet")
    ap.add_argument("--rows", type=int, default=3000)
    ap.add_argument("--kill-rows", type=int, default=4000)
    ap.add_argument("--kill-after", type=float, default=25.0)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="reruns-"))
    env = dict(os.environ, PIPELINE_CACHE_DIR=str(work / "cache"))
    inp = write_sample(args.input, args.rows, work / "comments.jsonl")
    out = work / "out"
    cold, st1 = run(inp, out, env)
    first = pl.read_parquet(out / "comments.parquet")
    print(json.dumps({"step": "cold", "rows": args.rows, "seconds": round(cold, 1), "stages": st1}))
    again, st2 = run(inp, out, env)
    same = first.equals(pl.read_parquet(out / "comments.parquet"))
    print(
        json.dumps(
            {
                "step": "identical rerun",
                "seconds": round(again, 1),
                "ratio_to_cold": round(again / cold, 3),
                "same_table": same,
                "stages": st2,
            }
        )
    )
    topic, st3 = run(inp, out, env, "--set", "topics.min_cluster_size=7")
    print(json.dumps({"step": "topics.min_cluster_size=7", "seconds": round(topic, 1), "stages": st3}))

    kinp = write_sample(args.input, args.kill_rows, work / "kill.jsonl")
    kout = work / "kill_out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "run", "--input", str(kinp), "--output", str(kout), "--quiet"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(args.kill_after)
    killed = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    readable_after_kill = all_readable(kout) if kout.exists() else True
    rerun, st4 = run(kinp, kout, env)
    kept = pl.read_parquet(kout / "comments.parquet").height
    quarantined = pl.read_parquet(kout / "quarantine.parquet").height if (kout / "quarantine.parquet").exists() else 0
    print(
        json.dumps(
            {
                "step": "kill -9 then rerun",
                "rows": args.kill_rows,
                "killed_at_s": args.kill_after,
                "was_running": killed,
                "readable_after_kill": readable_after_kill,
                "rerun_seconds": round(rerun, 1),
                "kept": kept,
                "quarantined": quarantined,
                "accounted": kept + quarantined == args.kill_rows,
                "readable_after_rerun": all_readable(kout),
                "stages": st4,
            }
        )
    )


if __name__ == "__main__":
    main()

"""The Ray executor against the local one on the same comments: same tables? how much slower here?

    python benchmarks/executors.py --input ../shared/bench/weibo_checked_comments.parquet [--rows 10000] [--mode quality]

Each executor runs as its own `python -m pipeline run` process with a fresh embedding cache (models
reused). Prints one JSON line: seconds and per-stage seconds of each, whether comments.parquet,
topics.parquet and review/queue.parquet are identical, and the Ray overhead (ray / local).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import MODES, ROOT, fresh_cache  # noqa: E402

OUTPUTS = ("comments.parquet", "topics.parquet", "review/queue.parquet")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", type=Path, required=True)
    ap.add_argument("--rows", type=int, default=10000)
    ap.add_argument("--mode", choices=sorted(MODES), default="quality")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-exec-"))
    sample = work / "input.parquet"
    pl.scan_parquet(args.input).head(args.rows).sink_parquet(sample)
    result: dict = {"input": args.input.name, "rows": args.rows, "mode": args.mode}
    for executor in ("local", "ray"):
        cache_dir = work / f"cache-{executor}"
        cache_dir.mkdir()
        env = dict(os.environ, PIPELINE_CACHE_DIR=str(fresh_cache(cache_dir)))
        t0 = time.perf_counter()
        res = subprocess.run(
            [
                sys.executable,
                "-m",
                "pipeline",
                "run",
                "--input",
                str(sample),
                "--output",
                str(work / executor),
                "--config",
                str(MODES[args.mode]),
                "--executor",
                executor,
                "--quiet",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        if res.returncode != 0:
            raise SystemExit(f"{executor} run failed:\n{res.stderr[-4000:]}")
        manifest = json.loads((work / executor / "manifest.json").read_text())
        result[executor] = {
            "seconds": round(time.perf_counter() - t0, 1),
            "stage_seconds": {s["name"]: s["seconds"] for s in manifest["stages"]},
        }
    result["identical"] = {name: pl.read_parquet(work / "local" / name).equals(pl.read_parquet(work / "ray" / name)) for name in OUTPUTS}
    result["ray_over_local"] = round(result["ray"]["seconds"] / result["local"]["seconds"], 2)
    print(json.dumps(result))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

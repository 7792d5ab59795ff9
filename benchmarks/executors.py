"""The Ray executor against the local one on the same comments: same tables? how much slower here?

    python benchmarks/executors.py --input ../shared/bench/weibo_checked_comments.parquet [--rows 10000]
                                   [--mode default|quality|fast] [--cluster 2]

Each executor runs as its own `python -m pipeline run` process with a fresh embedding cache (models
reused). Without --cluster the Ray run starts a private local Ray. With --cluster N it first starts
a real N-node Ray cluster on this machine (`ray start --head`, then N-1 nodes joining it with
`ray start --address`, each node its own raylet with --cpus-per-node CPUs), runs the pipeline with
`--set run.ray_address=<head>` so that it joins that cluster as a driver, and stops the cluster
afterwards (`ray stop`: it stops every Ray process of this machine).
Prints one JSON line: seconds and per-stage seconds of each, `nodes` (alive nodes of the cluster the
Ray run joined), whether comments.parquet, topics.parquet and review/queue.parquet are identical,
and the Ray overhead (ray / local).
"""

from __future__ import annotations

import argparse
import contextlib
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
RAY = Path(sys.executable).with_name("ray")
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


@contextlib.contextmanager
def local_cluster(nodes: int, cpus_per_node: int, port: int = 6391):
    """A real Ray cluster of `nodes` raylets on this machine; yields the head's address."""
    env = dict(os.environ, **RAY_ENV)
    address = f"127.0.0.1:{port}"
    head = [
        str(RAY),
        "start",
        "--head",
        f"--port={port}",
        f"--num-cpus={cpus_per_node}",
        "--include-dashboard=false",
        "--disable-usage-stats",
    ]
    worker = [str(RAY), "start", f"--address={address}", f"--num-cpus={cpus_per_node}", "--disable-usage-stats"]
    try:
        for cmd in [head] + [worker] * (nodes - 1):
            res = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if res.returncode != 0:
                raise SystemExit(f"{' '.join(cmd)} failed (is another Ray running here? `ray stop`):\n{res.stderr[-2000:]}")
        yield address
    finally:
        subprocess.run([str(RAY), "stop", "--force"], env=env, capture_output=True)


def alive_nodes(address: str) -> int:
    code = "import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR'); print(sum(n['Alive'] for n in ray.nodes()))"
    res = subprocess.run([sys.executable, "-c", code, address], env=dict(os.environ, **RAY_ENV), capture_output=True, text=True, check=True)
    return int(res.stdout.split()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", type=Path, required=True)
    ap.add_argument("--rows", type=int, default=10000)
    ap.add_argument("--mode", choices=sorted(MODES), default="default")
    ap.add_argument("--cluster", type=int, default=0, metavar="N", help="run the Ray executor on an N-node cluster started here")
    ap.add_argument("--cpus-per-node", type=int, default=1)
    args = ap.parse_args()
    with local_cluster(args.cluster, args.cpus_per_node) if args.cluster else contextlib.nullcontext() as address:
        compare(args, address)


def compare(args, address: str | None) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-exec-"))
    sample = work / "input.parquet"
    pl.scan_parquet(args.input).head(args.rows).sink_parquet(sample)
    result: dict = {"input": args.input.name, "rows": args.rows, "mode": args.mode}
    if address:
        result.update(cluster=address, nodes=alive_nodes(address), cpus_per_node=args.cpus_per_node)
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
                *(["--set", f"run.ray_address={address}"] if address and executor == "ray" else []),
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
            "executor": manifest["executor"],
            "stage_seconds": {s["name"]: s["seconds"] for s in manifest["stages"]},
        }
    result["identical"] = {name: pl.read_parquet(work / "local" / name).equals(pl.read_parquet(work / "ray" / name)) for name in OUTPUTS}
    result["ray_over_local"] = round(result["ray"]["seconds"] / result["local"]["seconds"], 2)
    print(json.dumps(result))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""End-to-end run at scale: seconds per stage, against the bare model encode of the same texts.

    python benchmarks/run.py --input ../shared/bench/weibo_checked_comments.parquet [--rows N]
                             [--mode default|quality|fast] [--executor local|ray] [--bare-sample N]

The pipeline runs as its own `python -m pipeline run` process with a fresh embedding cache (the
models are reused, so no conversion is timed); peak RSS is that process's (and its children's,
e.g. Ray workers) high-water mark. A separate process encodes the run's distinct normalised
texts with the same embedding model and settings, timing the encode call alone, once before and
once after the run; the mean of the two is the bare encode time. With --bare-sample N both time a
seeded sample of N distinct texts and scale to all of them (at a million comments a full bare
encode would double the benchmark's hour).
Prints one JSON line: rows, distinct texts, seconds per stage, total seconds, bare encode seconds,
ratio total/encode, peak RSS MB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
MODES = {"default": ROOT / "configs" / "default.yaml", "quality": ROOT / "configs" / "quality.yaml", "fast": ROOT / "configs" / "fast.yaml"}

BARE_ENCODE = """
import json, sys, time
from pathlib import Path
import polars as pl
from pipeline.config import load_config
from pipeline.stage import StageContext
from pipeline.models import embedder
cfg = load_config(Path(sys.argv[1]), [])
texts = pl.read_parquet(sys.argv[2])["text_norm"].drop_nulls().unique(maintain_order=True).to_list()
n_all, sample = len(texts), int(sys.argv[4])
if 0 < sample < n_all:
    import random
    texts = random.Random(0).sample(texts, sample)  # seeded: the same texts before and after the run
ctx = StageContext(seed=0, cache_dir=Path(sys.argv[3]), state_dir=None, progress=False)
model = embedder.load_model(cfg.embed, ctx.cache_dir)
embedder.encode(model, texts[:256], cfg.embed)  # warm-up: first-call allocations are not the model's speed
t0 = time.perf_counter()
embedder.encode(model, texts, cfg.embed)
seconds = time.perf_counter() - t0
print(json.dumps({"texts": n_all, "encoded": len(texts), "seconds": seconds * n_all / len(texts)}))
"""


def fresh_cache(work: Path) -> Path:
    """A cache directory with the built models linked in but no cached embeddings."""
    from pipeline.models.e5_model import default_cache_dir

    cache = work / "cache"
    cache.mkdir()
    (cache / "models").symlink_to(default_cache_dir() / "models")
    return cache


def normalised_texts(sample: Path, mode: str, work: Path) -> Path:
    """`text_norm` of every input row as the ingest stage makes it, for the encode before the run."""
    from pipeline.config import load_config
    from pipeline.io.readers import read_inputs
    from pipeline.stages.ingest import Normalizer

    cfg = load_config(MODES[mode], []).ingest
    raw = read_inputs([sample], cfg.id_column, cfg.text_column, cfg.thread_comments_start, cfg.context_columns)
    texts = raw.filter(pl.col("read_error").is_null() & pl.col("raw_text").is_not_null())["raw_text"]
    path = work / "text_norm.parquet"
    Normalizer(cfg.max_chars)(pl.DataFrame({"text": texts})).write_parquet(path)
    return path


def bare_encode(mode: str, texts_parquet: Path, cache: Path, env: dict, sample: int = 0) -> dict:
    enc = subprocess.run(
        [sys.executable, "-c", BARE_ENCODE, str(MODES[mode]), str(texts_parquet), str(cache), str(sample)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if enc.returncode != 0:
        raise SystemExit(f"bare encode failed:\n{enc.stderr[-4000:]}")
    return json.loads(enc.stdout.strip().splitlines()[-1])


def children_peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # kB on Linux


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", type=Path, required=True, help="parquet/CSV/JSONL with comment_id and text")
    ap.add_argument("--rows", type=int, default=0, help="first N rows only (0 = all)")
    ap.add_argument("--mode", choices=sorted(MODES), default="default")
    ap.add_argument("--executor", choices=("local", "ray"), default="local")
    ap.add_argument("--keep", action="store_true", help="keep the work directory and print its path")
    ap.add_argument(
        "--bare-sample",
        type=int,
        default=0,
        metavar="N",
        help="time the bare encode on a seeded sample of N distinct texts and scale it to all of them (0 = encode all)",
    )
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-run-"))
    table = pl.scan_parquet(args.input) if args.input.suffix == ".parquet" else None
    if table is not None:
        sample = work / "input.parquet"
        (table.head(args.rows) if args.rows else table).sink_parquet(sample)
    else:
        sample = args.input
    cache = fresh_cache(work)
    env = dict(os.environ, PIPELINE_CACHE_DIR=str(cache))
    out = work / "out"
    # The bare encode runs once before and once after the pipeline, and their mean is the
    # denominator: on a shared machine the same encode varied by +-10% from minute to minute.
    before = bare_encode(args.mode, normalised_texts(sample, args.mode, work), cache, env, args.bare_sample)
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
            str(out),
            "--config",
            str(MODES[args.mode]),
            "--executor",
            args.executor,
            "--quiet",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    total = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"pipeline run failed ({res.returncode}):\n{res.stderr[-4000:]}")
    peak = children_peak_rss_mb()
    manifest = json.loads((out / "manifest.json").read_text())
    stages = {s["name"]: s["seconds"] for s in manifest["stages"]}
    embed_facts = next(s["facts"] for s in manifest["stages"] if s["name"] == "embed")

    after = bare_encode(args.mode, out / "comments.parquet", cache, env, args.bare_sample)
    if before["texts"] != after["texts"]:
        print(f"note: {before['texts']} distinct texts encoded before the run, {after['texts']} in its output", file=sys.stderr)
    bare_seconds = (before["seconds"] + after["seconds"]) / 2
    print(
        json.dumps(
            {
                "input": args.input.name,
                "mode": args.mode,
                "executor": args.executor,
                "rows": manifest["summary"]["rows_in"],
                "distinct_texts": embed_facts["distinct_texts"],
                "distinct_fraction": round(embed_facts["distinct_texts"] / max(1, manifest["summary"]["kept"]), 3),
                "stage_seconds": stages,
                "pipeline_seconds_in_run": manifest["seconds"],
                "total_seconds": round(total, 1),
                "bare_encode_seconds": round(bare_seconds, 1),
                "bare_encode_before_after": [round(before["seconds"], 1), round(after["seconds"], 1)],
                "bare_encode_texts_timed": before["encoded"],
                "ratio_total_to_encode": round(total / bare_seconds, 3),
                "peak_rss_mb": round(peak),
                "cpus": os.cpu_count(),
            }
        )
    )
    if args.keep:
        print(f"work directory: {work}", file=sys.stderr)
    else:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Encoding speed of e5 on CPU: the runtime the default mode uses against torch fp32, on the same texts.

    python benchmarks/encode_speed.py [-n 2000] [--input comments.parquet|.jsonl] [--compare]
                                      [--runtime onnx-int8|torch] [--threads 0] [--cache-dir DIR]

Texts: the first N non-empty comments of --input (default ../shared/bench/weibo_checked_comments.parquet,
real Weibo comments; generated comment-like sentences when it is absent), normalised as the
pipeline normalises them, encoded with the pipeline's own embedder (pipeline/models/embedder.py).

Without --compare, prints {"runtime", "sentences", "seconds", "sentences_per_s", "load_seconds"}
for one runtime (default: the default config's). `load_seconds` includes a build, if the cache
lacks the model.

With --compare, one run encodes the same texts with torch fp32 (the reference: sentence-transformers'
BertModel as `embed.runtime: torch` runs it, batch `embed.batch_size`) and with the default runtime,
each after a warm-up, and prints {"sentences", "reference_runtime", "reference_per_s",
"shipped_runtime", "shipped_per_s", "ratio", "min_cosine", "p1_cosine", "mean_cosine"}: cosine
per sentence between the two vectors, minimum over all sentences.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import numpy as np

from pipeline.config import load_config
from pipeline.models import embedder
from pipeline.models.e5_model import default_cache_dir
from pipeline.text.normalize import normalize_text

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_INPUT = ROOT.parent / "shared" / "bench" / "weibo_checked_comments.parquet"
WARM_UP = 64

# Comment-like fragments; one of each makes a sentence of about 20 characters.
OPENERS = ["这个视频", "主播今天", "楼上说的", "这家店的", "客服的态度", "新出的手机", "这部电视剧", "小区物业", "昨天的比赛", "老师讲的"]
MIDDLES = ["真的太", "感觉有点", "实在是", "一点也不", "确实比较", "简直就是", "看起来很", "听说特别"]
CLOSERS = [
    "好笑了，哈哈哈",
    "让人失望了吧",
    "值得推荐给大家",
    "离谱，退款都不给",
    "良心，支持一下",
    "坑人，千万别买",
    "精彩，下次还来",
    "一般般吧，凑合",
]
TAILS = ["！！", "😂😂", "，懂的都懂", "，有同感吗？", "[赞]", "，说真的", "啊啊啊", "…"]


def generated_sentences(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)  # fixed seed: every run encodes the same texts
    parts = (OPENERS, MIDDLES, CLOSERS, TAILS)
    return ["".join(rng.choice(p) for p in parts) for _ in range(n)]


def read_texts(path: Path, n: int) -> list[str]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        texts = pq.read_table(path, columns=["text"]).slice(0, 4 * n).column("text").to_pylist()
    else:
        with open(path, encoding="utf-8") as f:
            texts = [json.loads(line)["text"] for line in f if line.strip()]
    normalised = (normalize_text(t) for t in texts if isinstance(t, str))
    return [t for t in normalised if t][:n]


def timed_encode(cfg, cache_dir: Path, texts: list[str]) -> tuple[np.ndarray, float, float]:
    """(vectors, encode seconds, load seconds) with one warm-up call first."""
    start = time.perf_counter()
    model = embedder.load_model(cfg, cache_dir)
    load_seconds = time.perf_counter() - start
    embedder.encode(model, texts[:WARM_UP], cfg)
    start = time.perf_counter()
    vectors = embedder.encode(model, texts, cfg)
    return vectors, time.perf_counter() - start, load_seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--sentences", type=int, default=2000)
    parser.add_argument("--input", type=Path, default=None, help=f"parquet or jsonl with a `text` column (default {DEFAULT_INPUT})")
    parser.add_argument("--compare", action="store_true", help="torch fp32 against the default runtime, in one run")
    parser.add_argument("--runtime", choices=["onnx-int8", "torch"], default=None, help="without --compare: this runtime")
    parser.add_argument("--threads", type=int, default=None, help="embed.threads (default: the config's)")
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args(argv)

    source = args.input or (DEFAULT_INPUT if DEFAULT_INPUT.exists() else None)
    texts = read_texts(source, args.sentences) if source else generated_sentences(args.sentences)
    cache_dir = args.cache_dir or default_cache_dir()
    shipped = load_config().embed
    if args.threads is not None:
        shipped = shipped.model_copy(update={"threads": args.threads})
    if args.runtime:
        shipped = shipped.model_copy(update={"runtime": args.runtime})
    torch_threads = shipped.threads or len(os.sched_getaffinity(0))
    import torch

    torch.set_num_threads(torch_threads)  # as the runner sets it (pipeline/runner.py apply_threads)

    if not args.compare:
        _, seconds, load_seconds = timed_encode(shipped, cache_dir, texts)
        result = {"runtime": shipped.runtime, "sentences": len(texts), "seconds": round(seconds, 3)}
        result.update(sentences_per_s=round(len(texts) / seconds, 1), load_seconds=round(load_seconds, 2))
        print(json.dumps(result))
        return

    reference = shipped.model_copy(update={"runtime": "torch"})
    ref_vectors, ref_seconds, _ = timed_encode(reference, cache_dir, texts)
    vectors, seconds, _ = timed_encode(shipped, cache_dir, texts)
    cosine = (ref_vectors * vectors).sum(1)
    result = {
        "input": source.name if source else "generated",
        "sentences": len(texts),
        "threads": torch_threads,
        "reference_runtime": "torch fp32",
        "reference_per_s": round(len(texts) / ref_seconds, 1),
        "shipped_runtime": shipped.runtime,
        "shipped_per_s": round(len(texts) / seconds, 1),
        "ratio": round(ref_seconds / seconds, 2),
        "min_cosine": round(float(cosine.min()), 4),
        "p1_cosine": round(float(np.percentile(cosine, 1)), 4),
        "mean_cosine": round(float(cosine.mean()), 5),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()

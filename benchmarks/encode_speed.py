"""Encoding speed of the converted e5 model on CPU.

    python benchmarks/encode_speed.py [-n 2000] [--input comments.parquet|.jsonl] [--cache-dir DIR]

Prints one JSON line: {"sentences": N, "seconds": s, "sentences_per_s": r, "load_seconds": l}.
`load_seconds` covers ensure_model (a build, if the cache is empty) and loading into
sentence-transformers; `seconds` is the timed encode only, after one warm-up batch.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch

from pipeline.models.e5_model import load_sentence_transformer

BATCH_SIZE = 64
THREADS = 2

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

        texts = pq.read_table(path, columns=["text"]).column("text").to_pylist()
    else:
        with open(path, encoding="utf-8") as f:
            texts = [json.loads(line)["text"] for line in f if line.strip()]
    return [t for t in texts if t][:n]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--sentences", type=int, default=2000)
    parser.add_argument("--input", type=Path, default=None, help="parquet or jsonl with a `text` column")
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args(argv)

    torch.set_num_threads(THREADS)
    texts = read_texts(args.input, args.sentences) if args.input else generated_sentences(args.sentences)

    start = time.perf_counter()
    model = load_sentence_transformer(args.cache_dir)
    load_seconds = time.perf_counter() - start

    model.encode(texts[:BATCH_SIZE], prompt_name="query", batch_size=BATCH_SIZE)  # warm-up
    start = time.perf_counter()
    model.encode(texts, prompt_name="query", batch_size=BATCH_SIZE)
    seconds = time.perf_counter() - start

    result = {
        "sentences": len(texts),
        "seconds": round(seconds, 3),
        "sentences_per_s": round(len(texts) / seconds, 1),
        "load_seconds": round(load_seconds, 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()

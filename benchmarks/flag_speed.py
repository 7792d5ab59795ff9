"""Speed of the offence models on CPU, next to the bare e5 encode of the same texts.

    python benchmarks/flag_speed.py [-n 1000] [--input comments.jsonl]

Prints one JSON line: comments per second of the fine-tuned encoder, the n-gram model, the whole
flag scoring (both models, lexicons, rules) and the e5 embedding encode, all on the same texts,
after a warm-up; `flag_over_encode` is the flag scoring's time over the encode's.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from encode_speed import generated_sentences, read_texts  # noqa: E402

from pipeline.config import FlagConfig
from pipeline.models.e5_model import default_cache_dir, load_sentence_transformer
from pipeline.scoring import score as scoring
from pipeline.text.normalize import normalize_text

THREADS = 2


def timed(fn, texts):
    fn(texts[:32])  # warm-up
    t0 = time.perf_counter()
    fn(texts)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--input", type=Path, help="JSONL/CSV/parquet comments (default: generated comment-like sentences)")
    args = ap.parse_args()
    torch.set_num_threads(THREADS)
    texts = read_texts(args.input, args.n) if args.input else generated_sentences(args.n)
    texts = [normalize_text(t) for t in texts]
    cfg = FlagConfig()
    models_dir = scoring.models_dir_of(cfg)
    encoder = scoring.load_encoder(models_dir, default_cache_dir())
    ngram = scoring.load_resources(models_dir)["offence"]
    st = load_sentence_transformer(default_cache_dir())
    vectors = np.zeros((len(texts), 384), np.float32)
    seconds = {
        "encoder": timed(encoder.predict_proba, texts),
        "ngram": timed(ngram.predict_proba, texts),
        "flag_scoring": timed(lambda ts: scoring.score_texts(ts, vectors[: len(ts)], cfg, default_cache_dir()), texts),
        "e5_encode": timed(lambda ts: st.encode(ts, prompt_name="query", batch_size=64), texts),
    }
    out = {
        "comments": len(texts),
        "threads": THREADS,
        **{f"{k}_per_s": round(len(texts) / v, 1) for k, v in seconds.items()},
        "flag_over_encode": round(seconds["flag_scoring"] / seconds["e5_encode"], 2),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()

"""Topics stage vs BERTopic on 5,000 product reviews in 10 known categories.

    python benchmarks/topics.py [--data ../shared/bench/online_shopping_10_cats.parquet] [--no-bertopic]

Sample: per category the first 500 reviews (by numeric review_id) of at least 8 characters. Both
methods get the same e5 embeddings (this project's embed stage, cached). Prints one JSON line per
method: NMI and ARI against the categories (outliers count as their own cluster), outlier share,
topic count, fit seconds, mean keyword length and the first topics' keywords; then one line saying
whether two runs of our stage in separate processes gave identical topic_ids.
BERTopic (pip install bertopic) runs with its defaults, a jieba tokenizer, and UMAP random_state=42.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.config import load_config  # noqa: E402
from pipeline.io import readers  # noqa: E402
from pipeline.models.e5_model import default_cache_dir  # noqa: E402
from pipeline.stage import StageContext  # noqa: E402
from pipeline.stages import dedup, embed, ingest, topics  # noqa: E402
from pipeline.text.keywords import stopwords  # noqa: E402

PER_CATEGORY = 500
MIN_CHARS = 8


def sample(path: Path) -> pl.DataFrame:
    df = pl.read_parquet(path).filter(pl.col("review").str.len_chars() >= MIN_CHARS)
    df = df.with_columns(pl.col("review_id").cast(pl.Int64)).sort("review_id")
    df = df.group_by("cat", maintain_order=True).head(PER_CATEGORY)
    return df.select(pl.col("review_id").cast(pl.String).alias("comment_id"), pl.col("review").alias("text"), "cat")


CONFIG: tuple[Path | None, list[str]] = (None, [])  # --config / --set, e.g. configs/fast.yaml


def prepared(df: pl.DataFrame) -> tuple[pl.DataFrame, StageContext]:
    cfg = load_config(*CONFIG)
    ctx = StageContext(seed=cfg.run.seed, cache_dir=default_cache_dir(), state_dir=None, progress=False)
    path = Path("/tmp/topics_bench_sample.jsonl")
    df.select("comment_id", "text").write_ndjson(path)
    raw = readers.read_inputs([path], "comment_id", "text", None)
    table = ingest.run(raw, cfg.ingest, ctx)
    table = embed.run(table, cfg.embed, ctx)
    table = dedup.run(table, cfg.dedup, ctx)
    return table, ctx


def keyword_stats(keyword_lists: list[list[str]]) -> dict:
    words = [w for ws in keyword_lists for w in ws]
    stop = stopwords()
    return {
        "mean_keyword_chars": round(float(np.mean([len(w) for w in words])), 2) if words else None,
        "stopwords_in_keywords": sorted({w for w in words if w in stop}),
    }


def scores(cats: list[str], labels: np.ndarray) -> dict:
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    return {
        "nmi": round(normalized_mutual_info_score(cats, labels), 4),
        "ari": round(adjusted_rand_score(cats, labels), 4),
        "outliers": round(float(np.mean(labels == -1)), 4),
        "topics": int(len(set(labels.tolist()) - {-1})),
    }


def run_ours(df: pl.DataFrame) -> tuple[dict, np.ndarray]:
    table, ctx = prepared(df)
    cfg = load_config(*CONFIG)
    t0 = time.perf_counter()
    out = topics.run(table, cfg.topics, ctx)
    seconds = time.perf_counter() - t0
    labels = out["topic_id"].to_numpy()
    side = ctx.side_tables["topics"].filter(pl.col("topic_id") >= 0)
    return {
        "method": "ours",
        **scores(df["cat"].to_list(), labels),
        "seconds": round(seconds, 1),
        **keyword_stats(side["keywords"].to_list()),
        "examples": [f"{r['topic_id']}: {' '.join(r['keywords'][:6])}" for r in side.head(5).iter_rows(named=True)],
    }, labels


def run_bertopic(df: pl.DataFrame, vectors: np.ndarray) -> dict:
    import jieba
    from bertopic import BERTopic
    from sklearn.feature_extraction.text import CountVectorizer
    from umap import UMAP

    umap_model = UMAP(n_neighbors=15, n_components=5, min_dist=0.0, metric="cosine", random_state=42)
    model = BERTopic(umap_model=umap_model, vectorizer_model=CountVectorizer(tokenizer=jieba.lcut))
    t0 = time.perf_counter()
    labels, _ = model.fit_transform(df["text"].to_list(), embeddings=vectors)
    seconds = time.perf_counter() - t0
    labels = np.asarray(labels)
    kws = [[w for w, _ in model.get_topic(t)] for t in sorted(set(labels.tolist()) - {-1})]
    return {
        "method": "bertopic",
        **scores(df["cat"].to_list(), labels),
        "seconds": round(seconds, 1),
        **keyword_stats(kws),
        "examples": [f"{i}: {' '.join(k[:6])}" for i, k in enumerate(kws[:5])],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "bench" / "online_shopping_10_cats.parquet")
    ap.add_argument("--no-bertopic", action="store_true")
    ap.add_argument("--no-repeat-check", action="store_true", help="skip the two extra processes that check ids repeat")
    ap.add_argument("--config", type=Path, help="pipeline config, e.g. configs/fast.yaml (static embeddings)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--dump-ids", type=Path, help=argparse.SUPPRESS)  # child process of the reproducibility check
    args = ap.parse_args()
    df = sample(args.data)
    CONFIG[1].extend(args.overrides)
    if args.config:
        globals()["CONFIG"] = (args.config, CONFIG[1])
    if args.dump_ids:
        _, labels = run_ours(df)
        np.save(args.dump_ids, labels)
        return
    result, labels = run_ours(df)
    print(
        json.dumps({"rows": df.height, "config": str(args.config or "default"), "overrides": args.overrides, **result}, ensure_ascii=False),
        flush=True,
    )
    if not args.no_bertopic:
        table, _ = prepared(df)
        vectors = table["embedding"].to_numpy().astype(np.float32)
        print(json.dumps({"rows": df.height, **run_bertopic(df, vectors)}, ensure_ascii=False), flush=True)
    if args.no_repeat_check:
        return
    dumps = [Path(f"/tmp/topics_ids_{i}.npy") for i in (1, 2)]
    for d in dumps:
        extra = (["--config", str(args.config)] if args.config else []) + [f"--set={o}" for o in args.overrides]
        subprocess.run([sys.executable, __file__, "--data", str(args.data), "--dump-ids", str(d), *extra], check=True)
    same = np.array_equal(np.load(dumps[0]), np.load(dumps[1])) and np.array_equal(np.load(dumps[0]), labels)
    print(json.dumps({"identical_topic_ids_across_processes": bool(same)}))


if __name__ == "__main__":
    main()

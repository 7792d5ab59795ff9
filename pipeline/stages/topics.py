"""Topics: UMAP + HDBSCAN over one representative per duplicate group; c-TF-IDF keywords.

Clustering representatives, not rows, keeps a campaign of 500 copies from becoming a topic of its
own; every member inherits its representative's topic. HDBSCAN's outliers join the nearest topic
centroid when they are close enough (`outlier_min_similarity`), so few comments stay at -1.
Topic ids are renumbered by size (0 = largest), ties by first representative in input order.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import polars as pl

from pipeline.config import TopicsConfig
from pipeline.keywords import ctfidf
from pipeline.stage import Stage, StageContext

NO_TOPIC_LABEL = "(no topic)"


def auto_min_cluster_size(n_representatives: int) -> int:
    """max(3, round(sqrt(n) / 2)): 78 comments -> 4, 10,000 -> 50, 100,000 -> 158."""
    return max(3, round(math.sqrt(n_representatives) / 2))


def cluster(vectors: np.ndarray, cfg: TopicsConfig, seed: int) -> tuple[np.ndarray, dict]:
    import hdbscan
    import umap

    n = len(vectors)
    if n < cfg.min_comments:
        return np.zeros(n, dtype=np.int64), {"clustered": False, "reason": f"fewer than {cfg.min_comments} distinct texts"}
    mcs = cfg.min_cluster_size or auto_min_cluster_size(n)
    reducer = umap.UMAP(n_neighbors=min(cfg.umap_neighbors, n - 1), n_components=min(cfg.umap_components, n - 2),
                        min_dist=cfg.umap_min_dist, metric="cosine", random_state=seed, init="spectral"
                        if n > cfg.umap_components + 2 else "random")
    with warnings.catch_warnings():
        # umap says random_state forces one thread: that is the price of reproducible topics.
        warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
        reduced = reducer.fit_transform(vectors)
    clusterer = hdbscan.HDBSCAN(min_cluster_size=mcs, min_samples=cfg.min_samples or mcs, metric="euclidean")
    labels = clusterer.fit_predict(reduced).astype(np.int64)
    return labels, {"clustered": True, "min_cluster_size": mcs}


def assign_outliers(vectors: np.ndarray, labels: np.ndarray, min_similarity: float) -> np.ndarray:
    topics = sorted(set(labels.tolist()) - {-1})
    if not topics or (labels >= 0).all():
        return labels
    centroids = np.stack([vectors[labels == t].mean(axis=0) for t in topics])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    out = labels.copy()
    idx = np.where(labels == -1)[0]
    sims = vectors[idx] @ centroids.T
    best = sims.argmax(axis=1)
    close = sims[np.arange(len(idx)), best] >= min_similarity
    out[idx[close]] = np.array(topics)[best[close]]
    return out


def renumber(labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """0 = the topic with most comments; -1 stays -1."""
    topics = [t for t in dict.fromkeys(labels.tolist()) if t != -1]  # first-appearance order
    size = {t: weights[labels == t].sum() for t in topics}
    order = sorted(topics, key=lambda t: -size[t])  # stable: ties keep first appearance
    mapping = {t: i for i, t in enumerate(order)} | {-1: -1}
    return np.array([mapping[t] for t in labels.tolist()], dtype=np.int64)


def run(table: pl.DataFrame, cfg: TopicsConfig, ctx: StageContext) -> pl.DataFrame:
    reps = table.filter(pl.col("is_dup_rep"))
    vectors = reps["embedding"].to_numpy().astype(np.float32)
    weights = reps["dup_group_size"].to_numpy()
    labels, info = cluster(vectors, cfg, ctx.seed)
    raw_outliers = float(weights[labels == -1].sum() / max(1, weights.sum()))
    labels = renumber(assign_outliers(vectors, labels, cfg.outlier_min_similarity), weights)

    rep_topics = pl.DataFrame({"dup_group": reps["dup_group"], "topic_id": labels})
    table = table.join(rep_topics, on="dup_group", how="left", maintain_order="left")
    topics = describe_topics(table, reps.with_columns(pl.Series("topic_id", labels)), vectors, labels, cfg)
    labels_by_id = dict(zip(topics["topic_id"].to_list(), topics["topic_label"].to_list()))
    table = table.with_columns(
        pl.col("topic_id").replace_strict(labels_by_id, default=NO_TOPIC_LABEL, return_dtype=pl.String)
        .alias("topic_label"))
    ctx.side_tables["topics"] = topics
    outlier_share = float((table["topic_id"] == -1).mean()) if table.height else 0.0
    ctx.facts.update(info, n_topics=int((topics["topic_id"] >= 0).sum()),
                     outlier_share_before_assignment=round(raw_outliers, 4), outlier_share=round(outlier_share, 4))
    return table


def describe_topics(table: pl.DataFrame, reps: pl.DataFrame, vectors: np.ndarray, labels: np.ndarray,
                    cfg: TopicsConfig) -> pl.DataFrame:
    docs: dict[int, list[str]] = {}
    for t, text in zip(labels.tolist(), reps["text_norm"].to_list()):
        docs.setdefault(t, []).append(text)
    keywords = ctfidf(docs, cfg.n_keywords)
    sizes = dict(table.group_by("topic_id").len().iter_rows())
    rows = []
    for t in sorted(docs):
        members = np.where(labels == t)[0]
        centroid = vectors[members].mean(axis=0)
        closest = members[np.argsort(-(vectors[members] @ centroid), kind="stable")[:3]]
        words = keywords.get(t, [])
        label = NO_TOPIC_LABEL if t == -1 else ("·".join(w for w, _ in words[: cfg.label_keywords]) or f"topic {t}")
        rows.append({
            "topic_id": t, "size": int(sizes.get(t, 0)), "n_groups": len(members), "topic_label": label,
            "keywords": [w for w, _ in words], "keyword_weights": [s for _, s in words],
            "representative_ids": [reps["comment_id"][int(i)] for i in closest],
            "representative_text": reps["text"][int(closest[0])],
        })
    return pl.DataFrame(rows, schema={
        "topic_id": pl.Int64, "size": pl.Int64, "n_groups": pl.Int64, "topic_label": pl.String,
        "keywords": pl.List(pl.String), "keyword_weights": pl.List(pl.Float64),
        "representative_ids": pl.List(pl.String), "representative_text": pl.String})


STAGE = Stage(name="topics", version="1", config_section="topics", code_modules=("pipeline.keywords",),
              requires=("embedding", "dup_group", "dup_group_size", "is_dup_rep", "text_norm"),
              adds=("topic_id", "topic_label"), run=run)

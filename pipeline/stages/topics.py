"""Topics: UMAP + HDBSCAN over one representative per duplicate group; c-TF-IDF keywords.

Clustering representatives, not rows, keeps a campaign of 500 copies from becoming a topic of its
own; every member inherits its representative's topic. HDBSCAN's outliers join the nearest topic
centroid when they are close enough (`outlier_min_similarity`), so few comments stay at -1.
Topic ids are renumbered by size (0 = largest), ties by first representative in input order.

Memory stays bounded: UMAP and HDBSCAN see at most `fit_sample` representatives (a seeded sample);
the others join the nearest topic centroid. The fitted model (one centroid, label and keyword list
per topic) is the stage's state `topic_model`: with a state directory (or `model_from`) a later
batch is assigned to those topics and keeps their ids, unless `refit` is set or more than
`refit_outlier_share` of its comments fit none of them.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import polars as pl

from pipeline.config import TopicsConfig
from pipeline.stage import Stage, StageContext
from pipeline.text.keywords import ctfidf

log = logging.getLogger("pipeline")

NO_TOPIC_LABEL = "(no topic)"
MIN_REPS_FOR_TOPIC_CAP = 1000
UMAP_EXACT_BELOW = 4096  # umap computes exact neighbours itself below this many points
MODEL = "topic_model"
MODEL_SCHEMA = {
    "topic_id": pl.Int64,
    "centroid": pl.List(pl.Float32),
    "topic_label": pl.String,
    "keywords": pl.List(pl.String),
    "keyword_weights": pl.List(pl.Float64),
    "n_groups_fitted": pl.Int64,
}


def auto_min_cluster_size(n_representatives: int) -> int:
    """max(3, round(n / 50)): 78 comments -> 3, 5,000 -> 100, 20,000 (the fit sample cap) -> 400.

    At most about 50 topics whatever the batch size: a reader can take in 50 labels, and
    HDBSCAN's smallest clusters on review and comment data are mostly near-copies anyway."""
    return max(3, round(n_representatives / 50))


def auto_min_samples(min_cluster_size: int) -> int:
    """min(min_cluster_size, 10). min_samples equal to a large min_cluster_size (HDBSCAN's default)
    made HDBSCAN merge ten product categories into 3 topics (NMI 0.56); 10 gave 13 topics, NMI 0.70."""
    return min(min_cluster_size, 10)


def cluster(vectors: np.ndarray, cfg: TopicsConfig, seed: int) -> tuple[np.ndarray, dict]:
    n = len(vectors)
    if n < cfg.min_comments:
        return np.zeros(n, dtype=np.int64), {"clustered": False, "reason": f"fewer than {cfg.min_comments} distinct texts"}
    # Imported here: loading them (numba) takes seconds that a small or empty batch does not need.
    import hdbscan
    import umap

    mcs = cfg.min_cluster_size or auto_min_cluster_size(n)
    n_neighbors = min(cfg.umap_neighbors, n - 1)
    # umap finds neighbours exactly below 4,096 points and with pynndescent above, whose numba
    # compilation alone took ~45 s per process here (the search itself under 1 s). Exact neighbours
    # by blocked matrix products take ~6 s on 20,000 points and are never approximate.
    knn = exact_cosine_knn(vectors, n_neighbors) if n >= UMAP_EXACT_BELOW else (None, None, None)
    reducer = umap.UMAP(
        n_neighbors=n_neighbors,
        n_components=min(cfg.umap_components, n - 2),
        min_dist=cfg.umap_min_dist,
        metric="cosine",
        random_state=seed,
        init="spectral" if n > cfg.umap_components + 2 else "random",
        precomputed_knn=knn,
    )
    with warnings.catch_warnings():
        # umap says random_state forces one thread: that is the price of reproducible topics.
        warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
        # Topics never call transform (new comments join the nearest centroid), so no search index.
        warnings.filterwarnings("ignore", message=r"precomputed_knn\[2\]", category=UserWarning)
        log.info("topics: UMAP on %d points", n)
        reduced = reducer.fit_transform(vectors)
    log.info("topics: HDBSCAN on %d points", n)
    # Capping a topic's share keeps HDBSCAN's excess-of-mass selection from picking two or three
    # super-clusters over the real topics (seen on product reviews: 10 categories -> 4 topics).
    # Only on large batches: on a small thread the cap can leave HDBSCAN no cluster it may pick
    # (24 comments in 3 themes of 8 all became outliers), and there the collapse was never seen.
    capped = cfg.max_topic_share < 1 and n >= MIN_REPS_FOR_TOPIC_CAP
    max_size = max(2 * mcs, int(cfg.max_topic_share * n)) if capped else 0
    clusterer = hdbscan.HDBSCAN(
        min_cluster_size=mcs, min_samples=cfg.min_samples or auto_min_samples(mcs), max_cluster_size=max_size, metric="euclidean"
    )
    labels = clusterer.fit_predict(reduced).astype(np.int64)
    return labels, {"clustered": True, "min_cluster_size": mcs, "max_cluster_size": max_size}


def exact_cosine_knn(vectors: np.ndarray, k: int, block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k nearest rows by cosine distance, itself first (as umap expects), in blocks of
    `block` rows so memory stays at block x n similarities. Deterministic for the same input."""
    v = vectors.astype(np.float32, copy=False)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    n = len(v)
    indices, distances = np.empty((n, k), dtype=np.int64), np.empty((n, k), dtype=np.float32)
    for start in range(0, n, block):
        sims = v[start : start + block] @ v.T
        rows = np.arange(len(sims))
        sims[rows, start + rows] = np.inf  # itself first, even among exact duplicates
        part = np.sort(np.argpartition(-sims, k - 1, axis=1)[:, :k], axis=1)
        order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1, kind="stable")
        nearest = np.take_along_axis(part, order, axis=1)
        dist = 1.0 - np.take_along_axis(sims, nearest, axis=1)
        dist[:, 0] = 0.0
        indices[start : start + block], distances[start : start + block] = nearest, np.maximum(dist, 0.0)
    return indices, distances


def assign_outliers(vectors: np.ndarray, labels: np.ndarray, min_similarity: float) -> np.ndarray:
    topics = sorted(set(labels.tolist()) - {-1})
    if not topics or (labels >= 0).all():
        return labels
    out = labels.copy()
    idx = np.where(labels == -1)[0]
    out[idx] = nearest_topic(vectors[idx], centroids_of(vectors, labels, topics), np.array(topics, dtype=np.int64), min_similarity)
    return out


def nearest_topic(vectors: np.ndarray, centroids: np.ndarray, topic_ids: np.ndarray, min_similarity: float) -> np.ndarray:
    """Each vector's nearest centroid's topic id when cosine similarity >= min_similarity, else -1."""
    if len(centroids) == 0 or len(vectors) == 0:
        return np.full(len(vectors), -1, dtype=np.int64)
    out = np.empty(len(vectors), dtype=np.int64)
    for start in range(0, len(vectors), 8192):  # bounded memory for the similarity block
        sims = vectors[start : start + 8192] @ centroids.T
        best = sims.argmax(axis=1)
        ok = sims[np.arange(len(best)), best] >= min_similarity
        out[start : start + 8192] = np.where(ok, topic_ids[best], -1)
    return out


def centroids_of(vectors: np.ndarray, labels: np.ndarray, topics: list[int]) -> np.ndarray:
    cents = np.stack([vectors[labels == t].mean(axis=0) for t in topics]) if topics else np.zeros((0, vectors.shape[1]), np.float32)
    return (cents / np.maximum(np.linalg.norm(cents, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def fit(vectors: np.ndarray, weights: np.ndarray, cfg: TopicsConfig, seed: int) -> tuple[np.ndarray, dict]:
    """Topic per representative: cluster a seeded sample, then nearest centroid for the rest."""
    n = len(vectors)
    sample = np.arange(n)
    if n > cfg.fit_sample:
        sample = np.sort(np.random.default_rng(seed).choice(n, cfg.fit_sample, replace=False))
    sample_labels, info = cluster(vectors[sample], cfg, seed)
    raw_outliers = float(weights[sample][sample_labels == -1].sum() / max(1, weights[sample].sum()))
    sample_labels = assign_outliers(vectors[sample], sample_labels, cfg.outlier_min_similarity)
    labels = np.full(n, -1, dtype=np.int64)
    labels[sample] = sample_labels
    if len(sample) < n:
        rest = np.setdiff1d(np.arange(n), sample)
        topics = sorted(set(sample_labels.tolist()) - {-1})
        labels[rest] = nearest_topic(
            vectors[rest],
            centroids_of(vectors[sample], sample_labels, topics),
            np.array(topics, dtype=np.int64),
            cfg.outlier_min_similarity,
        )
    info.update(fitted_on=int(len(sample)), outlier_share_before_assignment=round(raw_outliers, 4))
    return renumber(labels, weights), info


def model_table(topics: pl.DataFrame, vectors: np.ndarray, labels: np.ndarray) -> pl.DataFrame:
    named = topics.filter(pl.col("topic_id") >= 0)
    ids = named["topic_id"].to_list()
    cents = centroids_of(vectors, labels, ids)
    return pl.DataFrame(
        {
            "topic_id": ids,
            "centroid": [c.tolist() for c in cents],
            "topic_label": named["topic_label"],
            "keywords": named["keywords"],
            "keyword_weights": named["keyword_weights"],
            "n_groups_fitted": named["n_groups"],
        },
        schema=MODEL_SCHEMA,
    )


def renumber(labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """0 = the topic with most comments; -1 stays -1."""
    topics = [t for t in dict.fromkeys(labels.tolist()) if t != -1]  # first-appearance order
    size = {t: weights[labels == t].sum() for t in topics}
    order = sorted(topics, key=lambda t: -size[t])  # stable: ties keep first appearance
    mapping = {t: i for i, t in enumerate(order)} | {-1: -1}
    return np.array([mapping[t] for t in labels.tolist()], dtype=np.int64)


def run(table: pl.DataFrame, cfg: TopicsConfig, ctx: StageContext) -> pl.DataFrame:
    # The columns it reads, then the rows: filtering the whole table would copy every column.
    reps = table.select("is_dup_rep", "embedding", "dup_group_size", "dup_group", "text_norm", "comment_id", "text").filter(
        pl.col("is_dup_rep")
    )
    vectors = reps["embedding"].to_numpy().astype(np.float32, copy=False)
    weights = reps["dup_group_size"].to_numpy()
    saved = ctx.state.get(MODEL)
    mode, info = "fitted", {}
    if saved is not None and saved.height and len(saved["centroid"][0]) != vectors.shape[1]:
        mode = "refitted: the saved topics were fitted on another embedding model"
        saved = None
    if saved is not None and saved.height and not cfg.refit:
        labels = nearest_topic(
            vectors, np.array(saved["centroid"].to_list(), dtype=np.float32), saved["topic_id"].to_numpy(), cfg.outlier_min_similarity
        )
        outside = float(weights[labels == -1].sum() / max(1, weights.sum()))
        mode = "assigned" if outside <= cfg.refit_outlier_share else "refitted: too many comments outside the saved topics"
        info = {"saved_topics": saved.height, "outside_saved_topics": round(outside, 4)}
    if mode != "assigned":
        # No bar here (UMAP and HDBSCAN report no progress), so a line per step says what is running.
        ctx.log.info("topics: fitting on %d duplicate-group representatives", len(vectors))
        labels, fit_info = fit(vectors, weights, cfg, ctx.seed)
        info |= fit_info
    else:
        ctx.log.info("topics: %d representatives assigned to %d saved topics", len(vectors), saved.height)

    rep_topics = pl.DataFrame({"dup_group": reps["dup_group"], "topic_id": labels})
    # Join the key alone and add the result: a join of the whole table would copy every column,
    # the embedding vectors too (1.7 GB at a million comments).
    table = table.with_columns(table.select("dup_group").join(rep_topics, on="dup_group", how="left", maintain_order="left")["topic_id"])
    ctx.log.info("topics: keywords and labels of %d topics", len(set(labels.tolist()) - {-1}))
    topics = describe_topics(table, reps.with_columns(pl.Series("topic_id", labels)), vectors, labels, cfg, ctx.seed)
    if mode == "assigned":
        # Saved topics keep their labels and keywords, so a topic reads the same in every batch.
        topics = topics.drop("topic_label", "keywords", "keyword_weights").join(
            saved.select("topic_id", "topic_label", "keywords", "keyword_weights"), on="topic_id", how="left"
        )
        topics = topics.with_columns(pl.col("topic_label").fill_null(NO_TOPIC_LABEL)).select(
            "topic_id", "size", "n_groups", "topic_label", "keywords", "keyword_weights", "representative_ids", "representative_text"
        )
    else:
        ctx.side_tables[MODEL] = model_table(topics, vectors, labels)
    labels_by_id = dict(zip(topics["topic_id"].to_list(), topics["topic_label"].to_list()))
    table = table.with_columns(
        pl.col("topic_id").replace_strict(labels_by_id, default=NO_TOPIC_LABEL, return_dtype=pl.String).alias("topic_label")
    )
    ctx.side_tables["topics"] = topics
    outlier_share = float((table["topic_id"] == -1).mean()) if table.height else 0.0
    ctx.facts.update(info, topic_model=mode, n_topics=int((topics["topic_id"] >= 0).sum()), outlier_share=round(outlier_share, 4))
    return table


# Keywords of a topic come from at most this many of its representatives (a seeded sample):
# tokenising every one of a million comments would cost minutes and change no top-8 list.
KEYWORD_DOCS_PER_TOPIC = 5000


def describe_topics(
    table: pl.DataFrame, reps: pl.DataFrame, vectors: np.ndarray, labels: np.ndarray, cfg: TopicsConfig, seed: int = 0
) -> pl.DataFrame:
    docs: dict[int, list[str]] = {}
    texts = reps["text_norm"].to_list()
    rng = np.random.default_rng(seed)
    for t in dict.fromkeys(labels.tolist()):
        members = np.flatnonzero(labels == t)
        if len(members) > KEYWORD_DOCS_PER_TOPIC:
            members = np.sort(rng.choice(members, KEYWORD_DOCS_PER_TOPIC, replace=False))
        docs[t] = [texts[i] for i in members]
    keywords = ctfidf(docs, cfg.n_keywords)
    sizes = dict(table.group_by("topic_id").len().iter_rows())
    rows = []
    for t in sorted(docs):
        members = np.where(labels == t)[0]
        centroid = vectors[members].mean(axis=0)
        closest = members[np.argsort(-(vectors[members] @ centroid), kind="stable")[:3]]
        words = keywords.get(t, [])
        label = NO_TOPIC_LABEL if t == -1 else ("·".join(w for w, _ in words[: cfg.label_keywords]) or f"topic {t}")
        rows.append(
            {
                "topic_id": t,
                "size": int(sizes.get(t, 0)),
                "n_groups": len(members),
                "topic_label": label,
                "keywords": [w for w, _ in words],
                "keyword_weights": [s for _, s in words],
                "representative_ids": [reps["comment_id"][int(i)] for i in closest],
                "representative_text": reps["text"][int(closest[0])],
            }
        )
    return pl.DataFrame(
        rows,
        schema={
            "topic_id": pl.Int64,
            "size": pl.Int64,
            "n_groups": pl.Int64,
            "topic_label": pl.String,
            "keywords": pl.List(pl.String),
            "keyword_weights": pl.List(pl.Float64),
            "representative_ids": pl.List(pl.String),
            "representative_text": pl.String,
        },
    )


STAGE: Stage[TopicsConfig] = Stage(
    name="topics",
    version="2",
    config_section="topics",
    code_modules=("pipeline.text.keywords",),
    requires=("embedding", "dup_group", "dup_group_size", "is_dup_rep", "text_norm"),
    state=(MODEL,),
    adds=("topic_id", "topic_label"),
    run=run,
)

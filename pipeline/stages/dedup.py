"""Dedup: near-duplicate groups that survive evasion and do not drift.

1. Every `text_norm` gets a matching key (`pipeline/text/match_key.py`: no case, look-alikes,
   separators, spelling variants or repeats). Identical keys are always one group.
2. Keys of at least `min_chars` characters get a MinHash of the character `shingle_size`-grams of
   how they sound (each Chinese character replaced by a fixed homophone, so 维信 = 微信 = 卫信);
   LSH bands propose candidate pairs; a pair counts only when the exact n-gram Jaccard of the two
   keys is at least `min_jaccard`, or their normalised edit similarity at least
   `min_edit_similarity` (one changed character in a short comment). Shorter keys (and keys of emoji-only comments) match exactly only:
   "最棒中国" is not "最棒中国人".
3. Groups are led by a representative and never chain: keys are visited in a fixed order (their
   hash, so input order does not matter), representatives of earlier batches first; a key joins the
   representative it is most similar to among those it was verified against, or becomes a
   representative itself. Every member is within `min_jaccard` of its representative, so a chain
   A~B~C~D of individually-similar pairs cannot pull D into A's group.
4. `dup_group` is a hash of the representative's key, so the same comments get the same id in
   every run and order. With a state directory the index of keys and representatives persists:
   a later batch's copies join the groups of earlier batches and keep their ids.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import xxhash
from rapidfuzz.distance import Levenshtein
from rapidfuzz.process import cpdist

from pipeline.config import DedupConfig
from pipeline.stage import Stage, StageContext
from pipeline.text import jaccard, minhash
from pipeline.text.match_key import is_fallback, match_key, sound_key

INDEX = "dedup_index"
INDEX_SCHEMA = {
    "dedup_key": pl.String,
    "rep_key": pl.String,
    "rep_comment_id": pl.String,
    "rep_bands": pl.List(pl.UInt64),
    "lsh": pl.String,
}


def group_id(rep_key: str) -> str:
    return "g" + xxhash.xxh3_64_hexdigest(rep_key.encode("utf-8"))


def key_order(key: str) -> tuple[int, str]:
    return xxhash.xxh3_64_intdigest(key.encode("utf-8")), key


def lsh_shape(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows per band), bands * rows <= num_perm, whose S-curve threshold (1/b)^(1/r) is
    closest to `threshold`. Not only divisors of num_perm: with 128 permutations and 0.55 this is
    25 bands of 5 (0.525), which passes a Jaccard-0.64 pair 94% of the time but a 0.3 pair only 6%;
    32 bands of 4 would also pass 23% of the far more numerous 0.3 pairs."""
    shapes = [(num_perm // r, r) for r in range(1, num_perm + 1)]
    return min(shapes, key=lambda br: (abs((1 / br[0]) ** (1 / br[1]) - threshold), -br[0] * br[1]))


def lsh_setting(cfg: DedupConfig, seed: int) -> tuple[int, str]:
    bands, rows = lsh_shape(cfg.lsh_threshold, cfg.num_perm)
    return (bands, f"minhash{minhash.ALGORITHM_VERSION}/sound/shingle{cfg.shingle_size}/perm{cfg.num_perm}/bands{bands}x{rows}/seed{seed}")


def band_rows(sounds: list[str], cfg: DedupConfig, seed: int, bands: int, executor=None) -> np.ndarray:
    if not sounds:
        return np.zeros((0, bands), dtype=np.uint64)
    if executor is None:
        return Signer(cfg, seed, bands).bands(sounds)
    signed = executor.map_batches(
        Signer,
        pl.DataFrame({"sound": sounds}, schema={"sound": pl.String}),
        batch_size=SIGN_BATCH,
        desc="dedup: MinHash",
        cfg=cfg,
        seed=seed,
        bands=bands,
    )
    return signed["bands"].to_numpy().astype(np.uint64)


SIGN_BATCH = 50000  # keys MinHash-signed per batch


class Signer:
    """Batch function (pipeline/exec/executor.py): LSH band hashes of sound keys."""

    def __init__(self, cfg: DedupConfig, seed: int, bands: int):
        self.cfg, self.seed, self.bands_n = cfg, seed, bands

    def bands(self, sounds: list[str]) -> np.ndarray:
        sigs = minhash.signatures(sounds, self.cfg.shingle_size, self.cfg.num_perm, self.seed)
        rows = self.cfg.num_perm // self.bands_n
        return minhash.band_hashes(np.ascontiguousarray(sigs[:, : self.bands_n * rows]), self.bands_n)

    def __call__(self, batch: pl.DataFrame) -> pl.DataFrame:
        sounds = batch["sound"].to_list()
        values = self.bands(sounds) if sounds else np.zeros((0, self.bands_n), dtype=np.uint64)
        return pl.DataFrame({"bands": pl.Series("bands", values, dtype=pl.Array(pl.UInt64, self.bands_n))})


def verified_neighbours(
    new_keys: list[str],
    new_sounds: list[str],
    new_bands: np.ndarray,
    rep_keys: list[str],
    rep_sounds: list[str],
    rep_bands: np.ndarray,
    cfg: DedupConfig,
) -> pl.DataFrame:
    """Verified similar pairs (new key, other key, similarity), both directions among new keys.
    Keys are compared as they sound (`sound_key`), so homophone swaps cost nothing."""
    within = minhash.candidate_pairs(new_bands) if len(new_keys) > 1 else np.zeros((0, 2), np.int64)
    across = minhash.candidate_pairs(new_bands, rep_bands) if len(new_keys) and len(rep_keys) else np.zeros((0, 2), np.int64)
    frames = []
    for pairs, others, other_sounds in ((within, new_keys, new_sounds), (across, rep_keys, rep_sounds)):
        similarity = verify(new_sounds, other_sounds, pairs, cfg)
        kept = pairs[similarity > 0]
        frame = pl.DataFrame(
            {"key": [new_keys[i] for i in kept[:, 0]], "other": [others[j] for j in kept[:, 1]], "similarity": similarity[similarity > 0]},
            schema={"key": pl.String, "other": pl.String, "similarity": pl.Float64},
        )
        frames.append(frame)
        if others is new_keys:
            frames.append(frame.select(pl.col("other").alias("key"), pl.col("key").alias("other"), "similarity"))
    return pl.concat(frames)


def edit_jaccard_floor(cfg: DedupConfig) -> float:
    """The lowest n-gram Jaccard a pair with edit similarity >= min_edit_similarity can have, less a
    margin for short keys: each edit changes at most n n-grams, so with k = n * (1 - similarity)
    Jaccard >= (1 - k) / (1 + k) (0.67 for 2-grams at 0.9). Pairs below it skip the edit test,
    which spares scoring most candidates."""
    k = cfg.shingle_size * (1 - cfg.min_edit_similarity)
    return max(0.0, (1 - k) / (1 + k) - 0.1)


def verify(keys_a: list[str], keys_b: list[str], pairs: np.ndarray, cfg: DedupConfig) -> np.ndarray:
    """Similarity of each candidate pair (keys_a[i], keys_b[j]), 0 where it fails both tests: the
    exact n-gram Jaccard (>= min_jaccard), or for pairs that fail it, the normalised edit similarity
    (>= min_edit_similarity), which keeps one changed character in a 10-character comment
    (Jaccard 0.64) a near-duplicate."""
    if not len(pairs):
        return np.zeros(0, dtype=np.float64)
    jac = jaccard.pair_jaccard(keys_a, pairs, cfg.shingle_size, keys_b)
    similarity = np.where(jac >= cfg.min_jaccard, jac, 0.0)
    rest = np.flatnonzero((jac < cfg.min_jaccard) & (jac >= edit_jaccard_floor(cfg)))
    if len(rest) and cfg.min_edit_similarity < 1:
        edit = cpdist(
            [keys_a[i] for i in pairs[rest, 0]],
            [keys_b[j] for j in pairs[rest, 1]],
            scorer=Levenshtein.normalized_similarity,
            dtype=np.float64,
        )
        similarity[rest] = np.where(edit >= cfg.min_edit_similarity, edit, 0.0)
    return similarity


def lead(new_keys: list[str], neighbours: pl.DataFrame, existing_reps: set[str]) -> dict[str, str]:
    """Representative of every new key: the most similar representative among its verified
    neighbours at the moment it is visited, or itself."""
    reps = set(existing_reps)
    by_key = {k: list(zip(o, j)) for k, o, j in neighbours.group_by("key").agg("other", "similarity").iter_rows()}
    rep_of: dict[str, str] = {}
    for key in new_keys:  # already in canonical order
        choices = [(j, o) for o, j in by_key.get(key, ()) if o in reps]
        if choices:
            rep_of[key] = min(choices, key=lambda c: (-c[0], key_order(c[1])))[1]
        else:
            rep_of[key] = key
            reps.add(key)
    return rep_of


def assign(keys: set[str], index: pl.DataFrame | None, cfg: DedupConfig, seed: int, executor=None) -> tuple[dict[str, str], pl.DataFrame]:
    """Representative key of every distinct key, and the new rows for the index."""
    bands, setting = lsh_setting(cfg, seed)
    known: dict[str, str] = {}
    rep_keys: list[str] = []
    rep_sounds: list[str] = []
    rep_bands = np.zeros((0, bands), dtype=np.uint64)
    if index is not None and index.height:
        known = dict(zip(index["dedup_key"].to_list(), index["rep_key"].to_list()))
        reps = index.filter(pl.col("rep_bands").is_not_null())
        rep_keys = reps["dedup_key"].to_list()
        rep_sounds = [sound_key(k) for k in rep_keys]
        if reps.height and reps["lsh"][0] == setting:
            rep_bands = reps["rep_bands"].explode().to_numpy().astype(np.uint64).reshape(len(rep_keys), bands)
        else:  # the LSH settings changed since the index was written: re-sign its representatives
            rep_bands = band_rows(rep_sounds, cfg, seed, bands, executor)
    new = sorted((k for k in keys if k not in known), key=key_order)
    is_long = np.array([len(k) >= cfg.min_chars and not is_fallback(k) for k in new], dtype=bool)
    long_new = [k for k, ok in zip(new, is_long) if ok]
    new_sounds = [sound_key(k) for k in long_new]
    new_bands = band_rows(new_sounds, cfg, seed, bands, executor)
    neighbours = verified_neighbours(long_new, new_sounds, new_bands, rep_keys, rep_sounds, rep_bands, cfg)
    rep_of = {k: k for k in new} | lead(long_new, neighbours, set(rep_keys))
    # Band hashes are kept for long representatives only: the ones a later batch can join.
    all_bands = np.zeros((len(new), bands), dtype=np.uint64)
    all_bands[is_long] = new_bands
    rep_keys_new = [rep_of[k] for k in new]
    keep_bands = pl.Series([k == r for k, r in zip(new, rep_keys_new)], dtype=pl.Boolean) & pl.Series(is_long, dtype=pl.Boolean)
    new_rows = pl.DataFrame(
        {"dedup_key": new, "rep_key": rep_keys_new, "lsh": [setting] * len(new)},
        schema={"dedup_key": pl.String, "rep_key": pl.String, "lsh": pl.String},
    )
    new_rows = new_rows.with_columns(
        pl.when(keep_bands).then(pl.Series("rep_bands", all_bands).cast(pl.List(pl.UInt64))).alias("rep_bands")
    )
    return known | rep_of, new_rows


def run(table: pl.DataFrame, cfg: DedupConfig, ctx: StageContext) -> pl.DataFrame:
    index = ctx.state.get(INDEX)
    distinct = table["text_norm"].unique(maintain_order=True).to_list()
    key_of = {t: match_key(t) for t in distinct}
    keys = [key_of[t] for t in table["text_norm"].to_list()]
    rep_of, new_rows = assign(set(key_of.values()), index, cfg, ctx.seed, ctx.executor)

    group_of = {k: group_id(rep_of[k]) for k in set(keys)}
    text_hash = {t: xxhash.xxh3_64_intdigest(t.encode("utf-8")) for t in distinct}
    table = table.with_columns(
        pl.Series("dedup_key", keys, dtype=pl.String),
        pl.Series("_rep_key", [rep_of[k] for k in keys], dtype=pl.String),
        pl.Series("dup_group", [group_of[k] for k in keys], dtype=pl.String),
        pl.Series("_text_hash", [text_hash[t] for t in table["text_norm"].to_list()], dtype=pl.UInt64),
    )

    # The row that stands for its group in this batch (topics embed it): the representative's own
    # text if present, else the member text with the smallest hash; order-independent either way.
    order = pl.struct(
        (pl.col("dedup_key") != pl.col("_rep_key")).alias("a"), pl.col("_text_hash").alias("b"), pl.col("input_index").alias("c")
    )
    # Only the columns it needs are sorted: a sort of the whole table would copy the embeddings.
    slim = table.select("dup_group", "comment_id", "dedup_key", "_rep_key", "_text_hash", "input_index")
    first = slim.with_columns(order.alias("_order")).sort("_order").group_by("dup_group", maintain_order=True).first()
    batch_rep = dict(zip(first["dup_group"].to_list(), first["comment_id"].to_list()))
    # The group's representative comment: the one that founded it, in this batch or an earlier one.
    old_rep_ids = (
        {}
        if index is None
        else dict(index.filter(pl.col("dedup_key") == pl.col("rep_key")).select("dedup_key", "rep_comment_id").iter_rows())
    )
    rep_id = {g: old_rep_ids.get(rep_key, cid) for g, rep_key, cid in first.select("dup_group", "_rep_key", "comment_id").iter_rows()}
    table = table.with_columns(
        pl.col("dup_group").replace_strict(rep_id, return_dtype=pl.String).alias("dup_rep_id"),
        (pl.col("comment_id") == pl.col("dup_group").replace_strict(batch_rep, return_dtype=pl.String)).alias("is_dup_rep"),
        pl.len().over("dup_group").cast(pl.Int64).alias("dup_group_size"),
    )
    ctx.side_tables[INDEX] = _updated_index(index, new_rows, rep_id)
    ctx.facts.update(
        dup_groups=table["dup_group"].n_unique(),
        rows_in_groups_of_2_or_more=int((table["dup_group_size"] > 1).sum()),
        new_keys=new_rows.height,
        rows_joining_earlier_groups=sum(1 for k in table["_rep_key"].to_list() if k in old_rep_ids),
    )
    return table.drop("_rep_key", "_text_hash")


def _updated_index(index: pl.DataFrame | None, new_rows: pl.DataFrame, rep_id: dict[str, str]) -> pl.DataFrame:
    """Earlier rows plus this batch's new keys; a new representative remembers its comment id."""
    ids = [rep_id[group_id(r)] if k == r else None for k, r in zip(new_rows["dedup_key"].to_list(), new_rows["rep_key"].to_list())]
    new_rows = new_rows.with_columns(pl.Series("rep_comment_id", ids, dtype=pl.String)).select(list(INDEX_SCHEMA))
    return new_rows if index is None else pl.concat([index.select(list(INDEX_SCHEMA)), new_rows])


STAGE: Stage[DedupConfig] = Stage(
    name="dedup",
    version="2",
    config_section="dedup",
    code_modules=("pipeline.text.match_key", "pipeline.text.minhash", "pipeline.text.jaccard"),
    requires=("comment_id", "text_norm", "input_index"),
    state=(INDEX,),
    adds=("dedup_key", "dup_group", "dup_group_size", "dup_rep_id", "is_dup_rep"),
    run=run,
)

"""Side-by-side MinHash candidate engines on the distinct matching keys of a corpus.

    python benchmarks/minhash_engines.py --input ../shared/bench/weibo_checked_comments.parquet
        [--engines numpy,rensa-matrix,rensa-lsh,datasketch,verify] [--num-perm 32,64,128]
        [--shingle 2] [--threshold 0.5] [--min-jaccard 0.7] [--sample 50000]

Keys are made as the dedup stage makes them (normalize_text, then match_key), distinct, at least
`min_chars` long and not fallback keys, in the stage's order; they are cached in a temporary file
for the run. Each engine and num_perm runs in its own process so that its peak RSS is its own
(`peak_rss_mb` includes the keys and imports: `rss_after_load_mb`). One JSON line per run:

- numpy:        pipeline.text.minhash signatures -> band_hashes -> candidate_pairs -> pair_jaccard.
- rensa-matrix: rensa's digest matrix from our shingle hashes, copied out (to_rows), then as numpy.
- rensa-lsh:    rensa RMinHash objects + RMinHashLSH (insert_many, query_all); verified as numpy.
- datasketch:   MinHash.bulk + MinHashLSH on a `--sample` of keys, verified with Python sets;
                `extrapolated_seconds` scales the time linearly to all keys.
- verify:       exact Jaccard of the numpy engine's candidates: pair_jaccard, jaccard (lists of
                strings), Python sets; all three must agree.

Bands for numpy and rensa: pipeline.text.minhash.lsh_params(threshold, num_perm); datasketch picks its own.
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

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.text import jaccard, minhash  # noqa: E402

KEYS_COLUMN = "key"


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def make_keys(corpus: Path, out: Path, min_chars: int) -> int:
    import xxhash

    from pipeline.stages.dedup import match_key
    from pipeline.text.normalize import normalize_text

    texts = pl.read_parquet(corpus, columns=["text"])["text"].drop_nulls().unique().to_list()
    keys = {match_key(normalize_text(t)) for t in texts}
    # As the stage does: fallback keys ("\0" + emoji or punctuation) and short keys match exactly
    # only, and keys are visited in the order of their hash.
    keys = sorted(
        (k for k in keys if len(k) >= min_chars and not k.startswith("\0")), key=lambda k: (xxhash.xxh3_64_intdigest(k.encode("utf-8")), k)
    )
    pl.DataFrame({KEYS_COLUMN: keys}).write_parquet(out)
    return len(keys)


def python_jaccard(a: str, b: str, n: int) -> float:
    ga = {a[i : i + n] for i in range(max(1, len(a) - n + 1))}
    gb = {b[i : i + n] for i in range(max(1, len(b) - n + 1))}
    return len(ga & gb) / len(ga | gb)


class Timer:
    def __init__(self) -> None:
        self.phases: dict[str, float] = {}

    def __call__(self, name: str, fn, *args, **kwargs):
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        self.phases[name] = round(time.perf_counter() - start, 3)
        return result


def band_and_verify(keys: list[str], sigs: np.ndarray, bands: int, args, t: Timer) -> dict:
    """The part every signature engine shares: bands, candidate pairs, exact verification."""
    hashes = t("band_hashes", minhash.band_hashes, sigs, bands)
    pairs = t("candidate_pairs", minhash.candidate_pairs, hashes)
    jac = t("pair_jaccard", jaccard.pair_jaccard, keys, pairs, args.shingle)
    return {"bands": bands, "candidates": len(pairs), "verified": int((jac >= args.min_jaccard).sum())}


def run_numpy(keys: list[str], args, perm: int, t: Timer) -> dict:
    bands = minhash.lsh_params(args.threshold, perm)
    sigs = t("signatures", minhash.signatures, keys, args.shingle, perm, args.seed)
    return band_and_verify(keys, sigs, bands, args, t)


def run_rensa_matrix(keys: list[str], args, perm: int, t: Timer) -> dict:
    from rensa import RMinHash

    bands = minhash.lsh_params(args.threshold, perm)
    flat, offsets = t("shingle_hashes", minhash.shingle_hashes, keys, args.shingle)
    matrix = t("rensa_digest", RMinHash.digest_matrix_from_flat_token_hashes, flat, offsets.astype(np.uint64), perm, args.seed)
    # The digest matrix has no buffer interface: the only way out is a list of Python lists.
    sigs = t("to_numpy", lambda: np.asarray(matrix.to_rows(), dtype=np.uint32))
    return band_and_verify(keys, sigs, bands, args, t)


def run_rensa_lsh(keys: list[str], args, perm: int, t: Timer) -> dict:
    from rensa import RMinHash, RMinHashLSH

    bands = minhash.lsh_params(args.threshold, perm)
    n = args.shingle
    tokens = t("tokens", lambda: [[k[i : i + n] for i in range(max(1, len(k) - n + 1))] for k in keys])
    sketches = t("rensa_sketches", RMinHash.from_token_sets, tokens, perm, args.seed)
    del tokens
    lsh = RMinHashLSH(args.threshold, perm, bands)
    t("rensa_insert", lsh.insert_many, sketches)
    found = t("rensa_query", lsh.query_all, sketches)

    def to_pairs() -> np.ndarray:
        lengths = np.fromiter(map(len, found), dtype=np.int64, count=len(found))
        j = np.fromiter((x for row in found for x in row), dtype=np.int64, count=int(lengths.sum()))
        i = np.repeat(np.arange(len(found), dtype=np.int64), lengths)
        keep = i < j
        return np.stack([i[keep], j[keep]], axis=1)

    pairs = t("to_pairs", to_pairs)
    jac = t("pair_jaccard", jaccard.pair_jaccard, keys, pairs, args.shingle)
    return {"bands": bands, "candidates": len(pairs), "verified": int((jac >= args.min_jaccard).sum())}


def run_datasketch(keys: list[str], args, perm: int, t: Timer) -> dict:
    from datasketch import MinHash, MinHashLSH

    rng = np.random.default_rng(args.seed)
    sample = [keys[i] for i in np.sort(rng.choice(len(keys), size=min(args.sample, len(keys)), replace=False))]
    n = args.shingle
    start = time.perf_counter()
    sets = t("tokens", lambda: [[k[i : i + n].encode("utf-8") for i in range(max(1, len(k) - n + 1))] for k in sample])
    sigs = t("bulk", MinHash.bulk, sets, num_perm=perm, seed=args.seed)
    lsh = MinHashLSH(threshold=args.threshold, num_perm=perm)
    t("insert", lambda: [lsh.insert(i, s) for i, s in enumerate(sigs)])
    pairs = t("query", lambda: {(i, j) for i, s in enumerate(sigs) for j in lsh.query(s) if i < j})
    verified = t("python_jaccard", lambda: sum(python_jaccard(sample[i], sample[j], n) >= args.min_jaccard for i, j in pairs))
    seconds = time.perf_counter() - start
    scale = len(keys) / len(sample)
    # Candidates grow with the square of the sample (pairs), the time roughly linearly.
    return {
        "bands": lsh.b,
        "rows": lsh.r,
        "sample": len(sample),
        "candidates": len(pairs),
        "verified": verified,
        "extrapolated_seconds": round(seconds * scale, 1),
        "extrapolated_candidates": round(len(pairs) * scale * scale),
    }


def run_verify(keys: list[str], args, perm: int, t: Timer) -> dict:
    bands = minhash.lsh_params(args.threshold, perm)
    pairs = minhash.candidate_pairs(minhash.band_hashes(minhash.signatures(keys, args.shingle, perm, args.seed), bands))
    fast = t("pair_jaccard", jaccard.pair_jaccard, keys, pairs, args.shingle)
    lists = t("build_lists", lambda: ([keys[i] for i in pairs[:, 0].tolist()], [keys[j] for j in pairs[:, 1].tolist()]))
    from_lists = t("jaccard", jaccard.jaccard, lists[0], lists[1], args.shingle)
    sets = t("python_sets", lambda: np.array([python_jaccard(a, b, args.shingle) for a, b in zip(*lists)]))
    if not (np.array_equal(fast, sets) and np.array_equal(from_lists, sets)):
        raise SystemExit("verify: the vectorised Jaccard differs from the Python set computation")
    return {"bands": bands, "candidates": len(pairs), "verified": int((fast >= args.min_jaccard).sum()), "all_equal": True}


ENGINES = {
    "numpy": run_numpy,
    "rensa-matrix": run_rensa_matrix,
    "rensa-lsh": run_rensa_lsh,
    "datasketch": run_datasketch,
    "verify": run_verify,
}


def child(args) -> None:
    keys = pl.read_parquet(args.keys_file)[KEYS_COLUMN].to_list()
    after_load = peak_rss_mb()
    timer = Timer()
    start = time.perf_counter()
    result = ENGINES[args.engine](keys, args, args.num_perm_one, timer)
    seconds = round(time.perf_counter() - start, 3)
    print(
        json.dumps(
            {
                "engine": args.engine,
                "num_perm": args.num_perm_one,
                "shingle": args.shingle,
                "keys": len(keys),
                "seconds": seconds,
                **result,
                "phases": timer.phases,
                "peak_rss_mb": peak_rss_mb(),
                "rss_after_load_mb": after_load,
            }
        ),
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--input", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "bench" / "weibo_checked_comments.parquet"
    )
    parser.add_argument("--engines", default="numpy,rensa-matrix,rensa-lsh,datasketch,verify")
    parser.add_argument("--num-perm", default="32,64,128")
    parser.add_argument("--shingle", type=int, default=2)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--min-jaccard", type=float, default=0.7)
    parser.add_argument("--min-chars", type=int, default=6)
    parser.add_argument("--sample", type=int, default=50_000, help="keys for datasketch")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keys-file", type=Path, default=None, help="reuse (or keep) the prepared keys")
    # Internal: run one engine in this process.
    parser.add_argument("--engine", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--num-perm-one", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.engine:
        child(args)
        return

    with tempfile.TemporaryDirectory() as tmp:
        keys_file = args.keys_file or Path(tmp) / "keys.parquet"
        if not keys_file.exists():
            start = time.perf_counter()
            count = make_keys(args.input, keys_file, args.min_chars)
            print(json.dumps({"keys": count, "key_seconds": round(time.perf_counter() - start, 1)}), flush=True)
        for engine in args.engines.split(","):
            perms = [128] if engine == "verify" else [int(p) for p in args.num_perm.split(",")]
            for perm in perms:
                cmd = [
                    sys.executable,
                    __file__,
                    "--engine",
                    engine,
                    "--num-perm-one",
                    str(perm),
                    "--keys-file",
                    str(keys_file),
                    "--shingle",
                    str(args.shingle),
                    "--threshold",
                    str(args.threshold),
                    "--min-jaccard",
                    str(args.min_jaccard),
                    "--sample",
                    str(args.sample),
                    "--seed",
                    str(args.seed),
                ]
                done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ})
                line = done.stdout.strip().splitlines()[-1:] if done.returncode == 0 else []
                print(
                    line[0] if line else json.dumps({"engine": engine, "num_perm": perm, "error": done.stderr.strip().splitlines()[-1:]}),
                    flush=True,
                )


if __name__ == "__main__":
    main()

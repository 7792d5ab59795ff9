"""pipeline.text.minhash: determinism, estimates, candidates, the bucket cap and exact Jaccard."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys

import numpy as np
import pytest

from pipeline.text import jaccard, minhash

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BASE = "今天的天气真的很好我们一起去公园散步吧啊"  # 20 characters, 19 distinct bigrams
ONE_EDIT = BASE[:9] + "非" + BASE[10:]
UNRELATED = "楼主说得对支持一下希望越来越棒加油呀冲鸭"  # no bigram in common with BASE
KEYS = [BASE, ONE_EDIT, UNRELATED, "短", "", "abc123", "哈哈", "😂😂好笑", "\0？？？", BASE * 3]


def grams(key: str, n: int) -> set[str]:
    return {key[i : i + n] for i in range(max(1, len(key) - n + 1))}


def set_jaccard(a: str, b: str, n: int) -> float:
    ga, gb = grams(a, n), grams(b, n)
    return len(ga & gb) / len(ga | gb)


def digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(str(a.dtype).encode() + str(a.shape).encode() + np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def engine_digest() -> str:
    sigs = minhash.signatures(KEYS, 2, 64, 7)
    hashes, offsets = minhash.shingle_hashes(KEYS, 2)
    return digest(sigs, minhash.band_hashes(sigs, 16), np.sort(hashes), offsets)


def random_keys(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    alphabet = "的一是了我不人在有这个上们来到时大地为子中你说生国年着就那和要她出也得里后自以会家可下而过天去能对小多好ab1😂\0"
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 25))) for _ in range(count)]


def test_deterministic_within_a_process():
    assert engine_digest() == engine_digest()
    a = minhash.signatures(KEYS, 2, 64, 7)
    assert a.shape == (len(KEYS), 64) and a.dtype == np.uint32
    assert not np.array_equal(a, minhash.signatures(KEYS, 2, 64, 8))  # the seed matters


def test_deterministic_across_processes():
    # A different PYTHONHASHSEED proves nothing depends on Python's salted hash().
    code = "import tests.text.test_minhash as t; print(t.engine_digest())"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert out == engine_digest()


def test_shingle_hashes_are_per_key_sets_independent_of_the_batch():
    keys = random_keys(300, 1) + KEYS
    for n in (1, 2, 3, 4):
        hashes, offsets = minhash.shingle_hashes(keys, n)
        assert hashes.dtype == np.uint64 and offsets.dtype == np.int64 and len(offsets) == len(keys) + 1
        for i, key in enumerate(keys):
            own = hashes[offsets[i] : offsets[i + 1]]
            assert len(own) == len(set(own.tolist())) == len(grams(key, n))
            alone, alone_offsets = minhash.shingle_hashes([key], n)
            assert sorted(alone.tolist()) == sorted(own.tolist())
    # n-grams shared by two keys hash alike
    h, o = minhash.shingle_hashes(["我们一起", "一起去"], 2)
    assert len(set(h[o[0] : o[1]].tolist()) & set(h[o[1] : o[2]].tolist())) == 1


def test_estimated_jaccard_is_close_to_exact():
    rng = random.Random(3)
    pairs = [(BASE, ONE_EDIT), (BASE, BASE[:12]), (BASE, UNRELATED), (BASE * 2, BASE + UNRELATED)]
    for _ in range(20):
        k = "".join(rng.choice("天气真的很好我们一起去公园散步吧楼主说得对支持") for _ in range(30))
        pairs.append((k, k[: rng.randint(10, 30)] + "".join(rng.choice("加油啊希望") for _ in range(rng.randint(0, 10)))))
    a = minhash.signatures([p[0] for p in pairs], 2, 256, 11)
    b = minhash.signatures([p[1] for p in pairs], 2, 256, 11)
    estimate = (a == b).mean(axis=1)
    exact = np.array([set_jaccard(x, y, 2) for x, y in pairs])
    # Standard error at 256 permutations is at most 0.031; 0.12 is about four of them.
    assert np.abs(estimate - exact).max() < 0.12
    assert abs(estimate.mean() - exact.mean()) < 0.03


def test_candidates_find_a_one_character_edit_and_not_an_unrelated_key():
    bands = minhash.lsh_params(0.5, 128)
    keys = [BASE, UNRELATED, ONE_EDIT]
    pairs = minhash.candidate_pairs(minhash.band_hashes(minhash.signatures(keys, 2, 128, 1), bands))
    assert pairs.dtype == np.int64 and pairs.shape[1] == 2
    assert {tuple(p) for p in pairs.tolist()} == {(0, 2)}
    # The same across batches: new keys against stored ones.
    old = minhash.band_hashes(minhash.signatures([UNRELATED, BASE], 2, 128, 1), bands)
    new = minhash.band_hashes(minhash.signatures([ONE_EDIT], 2, 128, 1), bands)
    assert minhash.candidate_pairs(new, old).tolist() == [[0, 1]]


def test_candidate_pairs_match_brute_force_within_the_cap():
    rng = np.random.default_rng(5)
    a = rng.integers(0, 4, (40, 3)).astype(np.uint64)
    b = rng.integers(0, 4, (30, 3)).astype(np.uint64)
    within = {(i, j) for i in range(40) for j in range(i + 1, 40) if (a[i] == a[j]).any()}
    across = {(i, j) for i in range(40) for j in range(30) if (a[i] == b[j]).any()}
    big = 1000  # no bucket here is that large, so nothing is capped
    assert {tuple(p) for p in minhash.candidate_pairs(a, cap=big).tolist()} == within
    assert {tuple(p) for p in minhash.candidate_pairs(a, b, cap=big).tolist()} == across
    pairs = minhash.candidate_pairs(a)
    assert (pairs[:, 0] < pairs[:, 1]).all()
    assert pairs.tolist() == sorted(pairs.tolist())


def test_bucket_cap_keeps_a_huge_bucket_linear():
    n, cap = 10_000, minhash.BUCKET_CAP
    keys = ["这条评论被复制了一万次"] * n  # identical keys: identical signatures, every band one bucket
    hashes = minhash.band_hashes(minhash.signatures(keys, 2, 64, 1), 16)
    pairs = minhash.candidate_pairs(hashes)
    # Member r (0-based) links to the first min(r, cap) members.
    assert len(pairs) == cap * (n - cap) + cap * (cap - 1) // 2 <= cap * n
    assert set(pairs[:, 0].tolist()) == set(range(cap))
    assert set(pairs[:, 1].tolist()) == set(range(1, n))  # nobody is left out
    across = minhash.candidate_pairs(hashes, hashes[:5000])
    assert len(across) <= cap * (n + 5000)
    assert set(across[:, 0].tolist()) == set(range(n)) and set(across[:, 1].tolist()) == set(range(5000))


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_jaccard_equals_the_set_computation(n):
    keys = random_keys(400, n) + KEYS
    rng = random.Random(n)
    a = [rng.choice(keys) for _ in range(1500)]
    b = [rng.choice(keys) for _ in range(1500)]
    b[:200] = a[:200]  # identical keys: 1.0
    expected = np.array([set_jaccard(x, y, n) for x, y in zip(a, b)])
    got = jaccard.jaccard(a, b, n)
    assert got.dtype == np.float64
    assert np.array_equal(got, expected)  # exact, not approximately
    index = {k: i for i, k in enumerate(keys)}
    pairs = np.array([(index[x], index[y]) for x, y in zip(a, b)])
    assert np.array_equal(jaccard.pair_jaccard(keys, pairs, n), expected)
    half = len(keys) // 2
    cross = [(i, j) for i, j in pairs.tolist() if i < half and j >= half]
    assert np.array_equal(
        jaccard.pair_jaccard(keys[:half], np.array([(i, j - half) for i, j in cross]), n, keys[half:]),
        np.array([set_jaccard(keys[i], keys[j], n) for i, j in cross]),
    )


def test_jaccard_edge_cases():
    assert jaccard.jaccard([], [], 2).shape == (0,)
    assert jaccard.jaccard(["", "a", "ab"], ["", "", "ba"], 2).tolist() == [1.0, 0.0, 0.0]
    assert jaccard.jaccard([BASE], [ONE_EDIT], 2)[0] == pytest.approx(17 / 21)
    with pytest.raises(ValueError):
        jaccard.jaccard(["a"], [], 2)


def test_lsh_params():
    assert minhash.lsh_params(0.5, 128) == 32  # r = 4: threshold 0.42 (16 x 8 would be 0.71)
    assert minhash.lsh_params(0.5, 64) == 16  # r = 4: threshold exactly 0.5
    assert minhash.lsh_params(0.5, 32) == 8
    for perm in (16, 32, 64, 96, 128, 256):
        chosen = [minhash.lsh_params(t, perm) for t in (0.3, 0.5, 0.7, 0.9)]
        assert all(perm % b == 0 for b in chosen)
        assert chosen == sorted(chosen, reverse=True)  # a higher threshold needs fewer bands
    with pytest.raises(ValueError):
        minhash.band_hashes(np.zeros((2, 64), np.uint32), 5)

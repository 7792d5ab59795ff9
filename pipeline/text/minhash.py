"""MinHash signatures and LSH candidates for short matching keys, vectorised with numpy.

Everything is deterministic and stable across processes and platforms: shingle hashes,
permutations and band hashes come from fixed integer mixers (murmur3's finaliser, splitmix64),
never from Python's `hash()` or a random generator whose stream may change between releases.

Shingles. An n-gram is packed as an integer, (codepoint + 1) per character, 21 bits each, first
character highest; for n <= 3 that integer *is* the n-gram, and the shingle hash is a bijective
mix of it, so equal hashes mean equal n-grams. A key shorter than n has one shingle: the whole key.

Signatures. Permutation k maps the top 32 bits x of a shingle hash to a_k * x + b_k (mod 2**32,
a_k odd, so a bijection) and keeps the minimum over the key's shingles: uint32 signatures. Keys
are grouped by shingle count so each minimum is a plain elementwise pass over (keys, num_perm)
blocks; `np.minimum.reduceat` is several times slower, 64-bit lanes about 1.5x slower, for the
same estimation error (measured against exact Jaccard).

Candidates. Keys that share a band hash; huge buckets are capped, see `candidate_pairs`.

Jaccard: pipeline/text/jaccard.py.
"""

from __future__ import annotations

import numpy as np

# Bump whenever shingle hashes, signatures or band hashes change: band hashes persisted by another
# version must be recomputed, never compared.
ALGORITHM_VERSION = 1
SIG_DTYPE = np.uint32
# In a band bucket each member is paired with at most this many of the bucket's first members.
BUCKET_CAP = 32

_BITS_PER_CHAR = 21  # codepoint + 1 <= 0x110000 < 2**21
_U64 = np.uint64
_C1 = _U64(0xFF51AFD7ED558CCD)
_C2 = _U64(0xC4CEB9FE1A85EC53)
_GOLDEN = 0x9E3779B97F4A7C15
_M64 = (1 << 64) - 1
# (keys x num_perm) blocks of this many cells stay in the L2 cache; measured best at 2**15-2**16.
_SIG_BLOCK_CELLS = 1 << 15
_BAND_BLOCK_ROWS = 8192


def _fmix64(x: np.ndarray) -> np.ndarray:
    """murmur3's 64-bit finaliser, in place: a bijection that spreads every input bit."""
    x ^= x >> _U64(33)
    x *= _C1
    x ^= x >> _U64(33)
    x *= _C2
    x ^= x >> _U64(33)
    return x


def _splitmix64(seed: int, count: int) -> list[int]:
    """`count` well-mixed 64-bit integers from `seed`, in plain Python so they never depend on numpy's RNG."""
    out, state = [], seed & _M64
    for _ in range(count):
        state = (state + _GOLDEN) & _M64
        z = ((state ^ (state >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
        out.append(z ^ (z >> 31))
    return out


def _offsets(counts: np.ndarray) -> np.ndarray:
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """np.unique by sorting; numpy 2.4's np.unique takes a hash-table path that is ~50x slower here."""
    values = np.sort(values)
    keep = np.ones(len(values), dtype=np.bool_)
    keep[1:] = values[1:] != values[:-1]
    return values[keep]


def _segments(offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat positions of the segments offsets[r]:offsets[r+1] for r in rows, and their lengths."""
    lens = offsets[rows + 1] - offsets[rows]
    starts = offsets[rows] - (np.cumsum(lens) - lens)
    return np.arange(int(lens.sum()), dtype=np.int64) + np.repeat(starts, lens), lens


def _codepoints(keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """All keys' codepoints concatenated (uint32), and each key's length (int64)."""
    # surrogatepass: a lone surrogate is still a character of the key and must not raise.
    cp = np.frombuffer("".join(keys).encode("utf-32-le", "surrogatepass"), dtype="<u4")
    return cp, np.fromiter(map(len, keys), dtype=np.int64, count=len(keys))


def _pack(columns: list[np.ndarray], bits: int) -> np.ndarray:
    """Characters packed into one uint64, first character highest; folded by a 64-bit mix when too long."""
    codes = np.zeros(len(columns[0]), dtype=np.uint64)
    exact = len(columns) * bits <= 64
    for col in columns:
        if exact:
            codes <<= _U64(bits)
            codes |= col
        else:
            codes = _fmix64(codes ^ col) + _U64(_GOLDEN)
    return codes


def _ngram_codes(symbols: np.ndarray, lens: np.ndarray, n: int, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Every n-gram of every key packed by `_pack` (symbols >= 1), duplicates kept, and per-key counts."""
    nkeys = len(lens)
    # Each key is followed by n zero symbols, so a window never reads into the next key and a key
    # shorter than n packs as itself, zero-padded, unlike any full n-gram.
    key_start = np.zeros(nkeys, dtype=np.int64)
    if nkeys:
        key_start[1:] = np.cumsum(lens + n)[:-1]
    buf = np.zeros(len(symbols) + nkeys * n, dtype=np.uint64)
    buf[np.arange(len(symbols), dtype=np.int64) + np.repeat(key_start - (np.cumsum(lens) - lens), lens)] = symbols
    counts = np.maximum(lens - n + 1, 1)
    starts = np.arange(int(counts.sum()), dtype=np.int64) + np.repeat(key_start - (np.cumsum(counts) - counts), counts)
    return _pack([buf[starts + k] for k in range(n)], bits), counts


def _stable_ngram_hashes(keys: list[str], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Stable 64-bit hashes of every n-gram (duplicates kept) and per-key counts."""
    cp, lens = _codepoints(keys)
    codes, counts = _ngram_codes(cp.astype(np.uint64) + _U64(1), lens, n, _BITS_PER_CHAR)
    return _fmix64(codes), counts


def _distinct_ngrams(keys: list[str], n: int) -> tuple[np.ndarray, np.ndarray, int, np.ndarray] | None:
    """Each key's distinct n-grams as exact codes, ascending within a key, and per-key counts.

    Characters are renumbered 1..A over the alphabet present (returned, symbol s = codepoint
    alphabet[s - 1]), so n-grams pack into few bits: `gram_bits`. Codes are comparable only within
    one call. None when gram_bits > 56 (long n-grams over a large alphabet): too few bits left.
    """
    cp, lens = _codepoints(keys)
    if len(cp) > 1 << 18:  # a table over all of Unicode is cheapest for many characters
        present = np.zeros(0x110000, dtype=np.bool_)
        present[cp] = True
        alphabet = np.flatnonzero(present)
        symbols = np.cumsum(present, dtype=np.uint32)[cp]
    else:  # and sorting, for few
        alphabet = _sorted_unique(cp)
        symbols = np.searchsorted(alphabet, cp) + 1
    bits = max(1, len(alphabet).bit_length())
    gram_bits = n * bits
    if gram_bits > 56:
        return None
    codes, counts = _ngram_codes(symbols.astype(np.uint64), lens, n, bits)
    offsets = _offsets(counts)
    # Deduplicate by sorting (key, n-gram) in one uint64, in runs of keys whose index fits.
    step = 1 << (64 - gram_bits)
    kept_codes, kept_counts = [], []
    for lo in range(0, len(keys), step):
        hi = min(len(keys), lo + step)
        owner = np.repeat(np.arange(hi - lo, dtype=np.uint64), counts[lo:hi])
        merged = _sorted_unique((owner << _U64(gram_bits)) | codes[offsets[lo] : offsets[hi]])
        kept_codes.append(merged & _U64((1 << gram_bits) - 1))
        kept_counts.append(np.bincount((merged >> _U64(gram_bits)).astype(np.int64), minlength=hi - lo))
    return np.concatenate(kept_codes), np.concatenate(kept_counts), gram_bits, alphabet


def shingle_hashes(keys: list[str], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat uint64 hashes of every key's character n-grams, deduplicated per key, and offsets.

    Key i owns hashes[offsets[i]:offsets[i+1]] (offsets: len(keys) + 1 int64 values); the order
    within a key is unspecified. A key shorter than n has one shingle, the whole key. For n <= 3
    the hash is a bijection of the n-gram (no collisions); longer n-grams get a 64-bit mix.
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    if not keys:
        return np.zeros(0, dtype=np.uint64), np.zeros(1, dtype=np.int64)
    distinct = _distinct_ngrams(keys, n)
    if distinct is None:
        hashes, counts = _stable_ngram_hashes(keys, n)
        owner = np.repeat(np.arange(len(keys), dtype=np.int64), counts)
        order = np.lexsort((hashes, owner))
        hashes, owner = hashes[order], owner[order]
        keep = np.ones(len(hashes), dtype=np.bool_)
        keep[1:] = (hashes[1:] != hashes[:-1]) | (owner[1:] != owner[:-1])
        return hashes[keep], _offsets(np.bincount(owner[keep], minlength=len(keys)))
    codes, counts, gram_bits, alphabet = distinct
    # Back from this call's character numbering to codepoints, so hashes do not depend on the batch.
    bits = gram_bits // n
    to_char = np.concatenate([[0], alphabet + 1]).astype(np.uint64)
    columns = [to_char[(codes >> _U64(bits * (n - 1 - k))) & _U64((1 << bits) - 1)] for k in range(n)]
    return _fmix64(_pack(columns, _BITS_PER_CHAR)), _offsets(counts)


def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    mixed = _splitmix64(seed, 2 * num_perm)
    a = (np.array(mixed[:num_perm], dtype=np.uint64) >> _U64(32)).astype(np.uint32) | np.uint32(1)
    b = (np.array(mixed[num_perm:], dtype=np.uint64) >> _U64(32)).astype(np.uint32)
    return a, b


def _width_class(counts: np.ndarray) -> np.ndarray:
    """Shingle counts rounded up (by less than 1/8 above 16) so there are few distinct widths."""
    step = 1 << np.maximum(0, np.floor(np.log2(np.maximum(counts, 1))).astype(np.int64) - 3)
    step = np.where(counts <= 16, 1, step)
    return -(-counts // step) * step


def signatures(keys: list[str], n: int, num_perm: int, seed: int) -> np.ndarray:
    """MinHash signatures of the keys' n-gram sets, shape (len(keys), num_perm), uint32.

    Deterministic for a given seed on every platform. Only the top 32 bits of each shingle hash
    are permuted: two distinct n-grams collide with probability 2**-32, which no estimate notices.
    """
    if num_perm < 1:
        raise ValueError("num_perm must be >= 1")
    hashes, counts = _stable_ngram_hashes(keys, n)
    x32 = (hashes >> _U64(32)).astype(np.uint32)
    offsets = _offsets(counts)
    a, b = _permutations(num_perm, seed)
    sigs = np.empty((len(keys), num_perm), dtype=SIG_DTYPE)
    # Keys of one width share a (keys, width) gather; a key narrower than its width class repeats
    # its last n-gram, which changes no minimum. Duplicate n-grams likewise need no removal.
    widths = _width_class(counts)
    order = np.argsort(widths, kind="stable")
    block = max(1, _SIG_BLOCK_CELLS // num_perm)
    for group in np.split(order, np.flatnonzero(np.diff(widths[order])) + 1):
        if not len(group):
            continue
        width = int(widths[group[0]])
        for lo in range(0, len(group), block):
            rows = group[lo : lo + block]
            x = x32[np.minimum(np.arange(width), counts[rows, None] - 1) + offsets[rows, None]]
            acc = np.full((len(rows), num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
            tmp = np.empty_like(acc)
            for j in range(width):
                np.multiply(x[:, j, None], a, out=tmp)
                tmp += b
                np.minimum(acc, tmp, out=acc)
            sigs[rows] = acc
    return sigs


def band_hashes(sigs: np.ndarray, bands: int) -> np.ndarray:
    """One stable uint64 hash per band of r = num_perm // bands consecutive signature values.

    The band index is mixed in, so equal values in different bands never share a hash.
    """
    num, num_perm = sigs.shape
    if bands < 1 or num_perm % bands:
        raise ValueError(f"bands ({bands}) must divide num_perm ({num_perm})")
    if sigs.dtype.kind != "u" or sigs.dtype.itemsize > 4:
        raise ValueError("signatures must be uint32 (as `signatures` makes them)")
    rows = num_perm // bands
    salt = np.array(_splitmix64(bands, bands), dtype=np.uint64)
    out = np.empty((num, bands), dtype=np.uint64)
    for lo in range(0, num, _BAND_BLOCK_ROWS):  # blocks that stay in cache: ~5x faster than one pass
        grid = sigs[lo : lo + _BAND_BLOCK_ROWS].reshape(-1, bands, rows)
        h = np.tile(salt, (len(grid), 1))
        # Two 32-bit values per 64-bit word, combined arithmetically (not by a memory view) so the
        # result does not depend on the platform's byte order.
        for j in range(0, rows, 2):
            word = grid[:, :, j].astype(np.uint64) << _U64(32)
            if j + 1 < rows:
                word |= grid[:, :, j + 1]
            h ^= word
            _fmix64(h)
        out[lo : lo + _BAND_BLOCK_ROWS] = h
    return out


def _expand(head_start: np.ndarray, head_count: np.ndarray, member: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (head_start[i] + t, member[i]) for every t < head_count[i]."""
    first = np.cumsum(head_count) - head_count
    heads = np.arange(int(head_count.sum()), dtype=np.int64) + np.repeat(head_start - first, head_count)
    return heads, np.repeat(member, head_count)


def _table_size(n: int) -> int:
    return 1 << min(24, max(4, (4 * n).bit_length()))


def _band_pairs(h: np.ndarray, n_a: int | None, cap: int) -> tuple[np.ndarray, np.ndarray]:
    """Candidate pairs of one band: `h` holds the band's hash per index.

    n_a None: pairs (i, j), i < j. Otherwise indices below n_a are side a, the rest side b, and
    pairs are (a index, b index).
    """
    # Most buckets are singletons. A count table over the hashes' low bits (a superset of the
    # shared buckets: a few singletons collide there) is far cheaper than sorting every hash.
    slot = (h & _U64(_table_size(len(h)) - 1)).astype(np.intp)
    members = np.flatnonzero(np.bincount(slot, minlength=_table_size(len(h)))[slot] > 1)
    if not len(members):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    # Stable, so within a bucket lower indices (side a) come first.
    order = members[np.argsort(h[members], kind="stable")]
    hs = h[order]
    new = np.ones(len(hs), dtype=np.bool_)
    new[1:] = hs[1:] != hs[:-1]
    starts = np.flatnonzero(new)
    sizes = np.diff(np.append(starts, len(hs)))
    pos = np.arange(len(hs), dtype=np.int64)
    start = np.repeat(starts, sizes)
    if n_a is None:
        heads, tails = _expand(start, np.minimum(pos - start, cap), pos)
        return order[heads], order[tails]
    is_b = order >= n_a
    count_a = np.repeat(np.add.reduceat((~is_b).astype(np.int64), starts), sizes)
    count_b = np.repeat(sizes, sizes) - count_a
    # Each b member meets the bucket's first `cap` a members; each a member beyond those meets the
    # first `cap` b members: all pairs where either member ranks among the first `cap` of its side.
    heads_1, tails_1 = _expand(start[is_b], np.minimum(count_a[is_b], cap), pos[is_b])
    late = ~is_b & (pos - start >= cap)
    heads_2, tails_2 = _expand(start[late] + count_a[late], np.minimum(count_b[late], cap), pos[late])
    return order[np.concatenate([heads_1, tails_2])], order[np.concatenate([tails_1, heads_2])] - n_a


def candidate_pairs(bands_a: np.ndarray, bands_b: np.ndarray | None = None, *, cap: int = BUCKET_CAP) -> np.ndarray:
    """Unique index pairs sharing at least one band hash, int64 (m, 2), sorted by (i, j).

    Within `bands_a` (i < j) when `bands_b` is None, otherwise between them (i in a, j in b).

    Bucket cap: in a bucket (band, hash) whose members are ordered by index, each member is paired
    only with the first `cap` members before it, so a bucket of s members gives at most cap * s
    pairs instead of s * (s - 1) / 2; buckets of up to cap + 1 members give all their pairs.
    Between a and b a pair is kept when either member is among the first `cap` of its side in the
    bucket. Every member stays linked, to the members visited first if the keys are in visiting
    order, and similar members usually share another, smaller bucket too. Measured on the Weibo
    corpus (640k keys, 128 permutations, 32 bands): cap 32 gives 4.4M candidates and 44,595
    verified pairs (Jaccard >= 0.7), no cap 7.8M and 44,712, cap 8 2.6M and 43,372.
    """
    if cap < 1:
        raise ValueError("cap must be >= 1")
    bands_a = np.asarray(bands_a).astype(np.uint64, copy=False)
    if bands_b is None:
        hashes, n_a, width = bands_a, None, len(bands_a)
    else:
        bands_b = np.asarray(bands_b).astype(np.uint64, copy=False)
        if bands_a.shape[1] != bands_b.shape[1]:
            raise ValueError("bands_a and bands_b need the same number of bands")
        hashes, n_a, width = np.concatenate([bands_a, bands_b]), len(bands_a), len(bands_b)
    codes = [np.zeros(0, dtype=np.int64)]
    for column in np.ascontiguousarray(hashes.T):
        i, j = _band_pairs(column, n_a, cap)
        codes.append(i * width + j)  # one int64 per pair, so that one sort removes repeats across bands
    code = _sorted_unique(np.concatenate(codes))
    return np.stack([code // max(width, 1), code % max(width, 1)], axis=1)


def lsh_params(threshold: float, num_perm: int) -> int:
    """Bands b (a divisor of num_perm) whose S-curve threshold (1/b)**(1/r), r = num_perm // b,
    is closest to `threshold`; on a tie, fewer bands."""
    if not 0 < threshold < 1:
        raise ValueError("threshold must be in (0, 1)")
    if num_perm < 1:
        raise ValueError("num_perm must be >= 1")
    divisors = [b for b in range(1, num_perm + 1) if num_perm % b == 0]
    return min(divisors, key=lambda b: (abs((1 / b) ** (b / num_perm) - threshold), b))

"""MinHash signatures over word n-gram shingles, LSH band keys and candidate verification (pure numpy).

Permutations are multiply-shift hashes ``h_i(x) = ((a_i * x + b_i) mod 2^64) >> 32`` of each
shingle's 64-bit xxhash (``a_i`` odd): a universal family, vectorised over all shingles and all
permutations at once. The estimated Jaccard similarity of two documents is the share of equal
signature entries.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import xxhash

from orchestrator.data.text import shingle_words

EMPTY = np.uint32(0xFFFFFFFF)


def make_permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) uint64 arrays of the ``num_perm`` hash permutations (a odd), fixed by ``seed``."""
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
    return a, b


def shingles(text: str, n: int) -> set[str]:
    """Word n-grams of the lower-cased words (one shingle of all words when there are fewer than n)."""
    ws = shingle_words(text)
    if len(ws) < n:
        return {" ".join(ws)} if ws else set()
    return {" ".join(ws[i:i + n]) for i in range(len(ws) - n + 1)}


def shingle_hashes(text: str, n: int) -> np.ndarray:
    """Distinct 64-bit hashes of the shingles, sorted (the set that exact verification compares)."""
    return np.unique(np.fromiter((xxhash.xxh64_intdigest(s.encode()) for s in shingles(text, n)), dtype=np.uint64))


def signature(hashes: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """MinHash signature (uint32 per permutation); all-0xFFFFFFFF for a document without shingles."""
    if hashes.size == 0:
        return np.full(a.shape[0], EMPTY, dtype=np.uint32)
    with np.errstate(over="ignore"):
        values = (hashes[:, None] * a[None, :] + b[None, :]) >> np.uint64(32)
    return values.min(axis=0).astype(np.uint32)


def band_keys(sig: np.ndarray, num_bands: int, rows_per_band: int) -> np.ndarray:
    """One uint64 key per band: a hash of the band's rows, salted with the band index so equal
    rows in different bands never collide."""
    bands = np.ascontiguousarray(sig[: num_bands * rows_per_band]).reshape(num_bands, rows_per_band)
    return np.fromiter((xxhash.xxh64_intdigest(bands[i].tobytes(), seed=i) for i in range(num_bands)),
                       dtype=np.uint64, count=num_bands)


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    return float(np.mean(sig_a == sig_b))


def jaccard(a: set, b: set) -> float:
    """True Jaccard similarity of two sets (1.0 for two empty sets)."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def detection_probability(s: float, num_bands: int, rows_per_band: int) -> float:
    """P(a pair with Jaccard s shares at least one band) = 1 - (1 - s^r)^b."""
    return 1 - (1 - s**rows_per_band) ** num_bands


def verify_bucket_members(orders: np.ndarray, sigs: np.ndarray, threshold: float,
                          max_comparisons: int) -> tuple[np.ndarray, np.ndarray]:
    """Verified duplicate edges among the documents of one LSH bucket.

    Args:
        orders: [k] document orders (input position), sorted ascending.
        sigs: [k, num_perm] their signatures.
        threshold: minimum estimated Jaccard for an edge.
        max_comparisons: each member is compared with at most this many of the earliest members.
    Returns:
        (earlier, later) order arrays: each later member linked to the first earlier member it matches.
    """
    k = len(orders)
    if k < 2:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    m = min(k, max_comparisons)
    sim = (sigs[:, None, :] == sigs[None, :m, :]).mean(axis=2)  # [k, m]
    earlier = np.arange(m)[None, :] < np.arange(k)[:, None]
    ok = (sim >= threshold) & earlier
    has = ok.any(axis=1)
    first = ok.argmax(axis=1)
    later_idx = np.nonzero(has)[0]
    return orders[first[later_idx]].astype(np.int64), orders[later_idx].astype(np.int64)


def verify_buckets(keys: np.ndarray, orders: np.ndarray, sigs: np.ndarray, threshold: float,
                   max_comparisons: int) -> tuple[np.ndarray, np.ndarray]:
    """Verified edges of every bucket in a batch of (band key, order, signature) rows."""
    idx = np.lexsort((orders, keys))
    keys, orders, sigs = keys[idx], orders[idx], sigs[idx]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    ends = np.r_[starts[1:], len(keys)]
    src: list[np.ndarray] = []
    dst: list[np.ndarray] = []
    for s, e in zip(starts[ends - starts >= 2], ends[ends - starts >= 2]):
        a, b = verify_bucket_members(orders[s:e], sigs[s:e], threshold, max_comparisons)
        src.append(a)
        dst.append(b)
    if not src:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(src), np.concatenate(dst)


def first_occurrences(keys: Sequence[int] | np.ndarray, orders: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact dedup within one group of rows: for every row whose key appeared at a smaller order,
    (removed order, representative order)."""
    keys = np.asarray(keys)
    idx = np.lexsort((orders, keys))
    k, o = keys[idx], orders[idx]
    is_first = np.r_[True, k[1:] != k[:-1]]
    rep = o[np.maximum.accumulate(np.where(is_first, np.arange(len(o)), 0))] if len(o) else o
    return o[~is_first], rep[~is_first]


# ----- exact verification: candidate pairs from LSH buckets, checked on their shingle sets -----------

def candidate_pairs(keys: np.ndarray, orders: np.ndarray, max_comparisons: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (earlier, later) candidate pairs of a batch of (band key, order) rows: in every bucket
    (band key) each member is paired with the earlier of its first ``max_comparisons`` members.
    Vectorised: the member of rank i in its bucket yields min(i, max_comparisons) pairs."""
    keys, orders = np.asarray(keys, np.uint64), np.asarray(orders, np.int64)
    if len(keys) < 2:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    idx = np.lexsort((orders, keys))
    keys, orders = keys[idx], orders[idx]
    new_group = np.r_[True, keys[1:] != keys[:-1]]
    start = np.maximum.accumulate(np.where(new_group, np.arange(len(keys)), 0))  # first row of each row's bucket
    rank = np.arange(len(keys)) - start
    count = np.minimum(rank, max_comparisons)
    later = np.repeat(np.arange(len(keys)), count)
    earlier = np.repeat(start, count) + (np.arange(len(later)) - np.repeat(np.cumsum(count) - count, count))
    a, b = orders[earlier], orders[later]
    keep = a != b
    if not keep.any():
        return np.empty(0, np.int64), np.empty(0, np.int64)
    pairs = np.unique(np.stack([a[keep], b[keep]], axis=1), axis=0)
    return pairs[:, 0], pairs[:, 1]


def exact_jaccard(x: np.ndarray, y: np.ndarray) -> float:
    """Jaccard similarity of two sets of distinct shingle hashes (1.0 for two empty sets)."""
    if not len(x) and not len(y):
        return 1.0
    inter = np.intersect1d(x, y, assume_unique=True).size
    return inter / (len(x) + len(y) - inter)


def verify_pairs(a: np.ndarray, b: np.ndarray, shingles_of: Callable[[int], np.ndarray],
                 threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact verification of candidate pairs (a earlier than b): each later document is linked to the
    earliest of its candidates whose shingle Jaccard is >= ``threshold`` (one edge per document, as in
    :func:`verify_bucket_members`; the components then join the rest).

    Args:
        shingles_of: order -> its distinct shingle hashes.
    """
    if not len(a):
        return np.empty(0, np.int64), np.empty(0, np.int64)
    pairs = np.unique(np.stack([np.asarray(b, np.int64), np.asarray(a, np.int64)], axis=1), axis=0)  # by b, then a
    starts = np.flatnonzero(np.r_[True, pairs[1:, 0] != pairs[:-1, 0]])
    ends = np.r_[starts[1:], len(pairs)]
    src: list[int] = []
    dst: list[int] = []
    for s, e in zip(starts, ends):
        later = int(pairs[s, 0])
        sh = shingles_of(later)
        for earlier in pairs[s:e, 1].tolist():
            if exact_jaccard(shingles_of(earlier), sh) >= threshold:
                src.append(earlier)
                dst.append(later)
                break
    return np.asarray(src, np.int64), np.asarray(dst, np.int64)

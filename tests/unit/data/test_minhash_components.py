"""MinHash/LSH math and the large-star/small-star connected components, against exact references."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.kinds.data_prep import lsh_detection_curve
from orchestrator.data.components import connected_components_local, large_star, normalize_edges, small_star
from orchestrator.data.minhash import (band_keys, detection_probability, estimated_jaccard, first_occurrences,
                                       jaccard, make_permutations, shingles, signature, verify_bucket_members,
                                       verify_buckets)

A, B = make_permutations(112, seed=42)


def sig_of(items: set[int]) -> np.ndarray:
    return signature(np.array(sorted(items), dtype=np.uint64), A, B)


def test_shingles_ignore_case_and_punctuation():
    assert shingles("The cat, sat on THE mat.", 3) == {"the cat sat", "cat sat on", "sat on the", "on the mat"}
    assert shingles("two words", 5) == {"two words"} and shingles("", 5) == set()


@pytest.mark.parametrize("true_j", [0.2, 0.5, 0.8, 0.95])
def test_signature_estimates_jaccard(true_j):
    # sets of 1000 elements with |A & B| / |A | B| = true_j
    inter = int(round(2000 * true_j / (1 + true_j)))
    a = set(range(1000))
    b = set(range(1000 - inter, 2000 - inter))
    assert jaccard(a, b) == pytest.approx(true_j, abs=0.002)
    est = estimated_jaccard(sig_of(a), sig_of(b))
    assert abs(est - true_j) < 4 * np.sqrt(true_j * (1 - true_j) / 112) + 0.01


def test_signature_is_deterministic_and_empty_safe():
    assert np.array_equal(sig_of({1, 2, 3}), sig_of({3, 2, 1}))
    assert (signature(np.empty(0, np.uint64), A, B) == 0xFFFFFFFF).all()
    a2, _ = make_permutations(112, seed=43)
    assert not np.array_equal(a2, A)


def test_band_keys_equal_iff_band_rows_equal():
    s = sig_of(set(range(50)))
    t = s.copy()
    t[8] ^= 1  # change a row of band 1 only
    ks, kt = band_keys(s, 14, 8), band_keys(t, 14, 8)
    assert (ks == kt).sum() == 13 and ks[1] != kt[1]
    # equal rows in different bands do not collide
    same = np.zeros(112, np.uint32)
    assert len(set(band_keys(same, 14, 8).tolist())) == 14


def test_detection_probability_matches_plan_curve():
    curve = lsh_detection_curve(14, 8)
    for s, p in curve.items():
        assert detection_probability(s, 14, 8) == pytest.approx(p, abs=1e-4)
    assert detection_probability(0.9, 14, 8) > 0.999 and detection_probability(0.5, 14, 8) < 0.06


def test_lsh_candidate_rate_matches_formula():
    rng = np.random.default_rng(0)
    hits = 0
    trials = 300
    for t in range(trials):  # pairs with Jaccard 0.7
        base = set(rng.choice(10**9, 1000, replace=False).tolist())
        inter = int(round(2000 * 0.7 / 1.7))
        drop = list(base)[:1000 - inter]
        other = (base - set(drop)) | set(rng.choice(10**9, 1000 - inter, replace=False).tolist())
        hits += bool((band_keys(sig_of(base), 14, 8) == band_keys(sig_of(other), 14, 8)).any())
    assert abs(hits / trials - detection_probability(0.7, 14, 8)) < 0.1


def test_verify_bucket_links_each_member_to_first_match():
    base = set(range(1000))
    s0, s1 = sig_of(base), sig_of(base)  # identical
    s2 = sig_of(set(range(500, 1500)))  # Jaccard 1/3 with base
    s3 = sig_of(set(range(500, 1490)) | {5000})  # close to s2
    orders = np.array([10, 20, 30, 40])
    a, b = verify_bucket_members(orders, np.stack([s0, s1, s2, s3]), 0.8, 16)
    assert sorted(zip(a.tolist(), b.tolist())) == [(10, 20), (30, 40)]
    # max_comparisons=1: members only compared with the first one
    a, b = verify_bucket_members(orders, np.stack([s0, s1, s2, s3]), 0.8, 1)
    assert list(zip(a.tolist(), b.tolist())) == [(10, 20)]


def test_verify_buckets_groups_by_key():
    s = sig_of(set(range(100)))
    keys = np.array([5, 7, 5, 7], np.uint64)
    a, b = verify_buckets(keys, np.array([3, 1, 0, 2]), np.stack([s, s, s, s]), 0.8, 16)
    assert sorted(zip(a.tolist(), b.tolist())) == [(0, 3), (1, 2)]


def test_first_occurrences():
    removed, rep = first_occurrences(np.array(["x", "y", "x", "x", "z"]), np.array([5, 1, 2, 9, 3]))
    assert sorted(zip(removed.tolist(), rep.tolist())) == [(5, 2), (9, 2)]


def union_find(edges, nodes):
    parent = {n: n for n in nodes}

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {n: find(n) for n in nodes}


def test_star_operations_worked_example():
    # path 3-1-2: large-star at 1 (min 1) links larger neighbours 3 and 2 to 1; at 2, 3: nothing larger
    src, dst = np.array([1, 3, 1, 2]), np.array([3, 1, 2, 1])
    a, b, unstable = large_star(src, dst)
    assert sorted(zip(a.tolist(), b.tolist())) == [(1, 2), (1, 3)] and unstable == 0
    # small-star on edges keyed by the larger end: 3 -> {1, 2} links 2 and 3 to 1
    a, b = small_star(np.array([3, 3]), np.array([1, 2]))
    assert sorted(zip(a.tolist(), b.tolist())) == [(1, 2), (1, 3)]
    assert normalize_edges(np.array([2, 2, 5]), np.array([1, 2, 1]))[0].tolist() == [1, 1]


@pytest.mark.parametrize("seed", range(30))
def test_components_match_union_find(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 400))
    if seed % 3 == 0:  # long paths are the slow case for label propagation
        perm = rng.permutation(n)
        a, b = perm[:-1], perm[1:]
    else:
        m = int(rng.integers(1, 500))
        a, b = rng.integers(0, n, m), rng.integers(0, n, m)
    got = connected_components_local(a, b)
    edges = [(int(x), int(y)) for x, y in zip(a, b) if x != y]
    nodes = {x for e in edges for x in e}
    assert got == union_find(edges, nodes)


def test_shingle_hashes_are_one_per_distinct_shingle():
    from orchestrator.data.minhash import shingle_hashes

    text = "the cat sat on the mat and the cat sat on the mat again"
    assert len(shingle_hashes(text, 3)) == len(shingles(text, 3)) == 8
    # case and punctuation do not matter; word order does
    assert np.array_equal(shingle_hashes("The cat, sat on THE mat.", 3), shingle_hashes("the cat sat on the mat", 3))
    assert not set(shingle_hashes("cat the sat", 3)) & set(shingle_hashes("the cat sat", 3))
    assert len(shingle_hashes("two words", 5)) == 1 and len(shingle_hashes("", 5)) == 0
    assert shingle_hashes("two words", 5)[0] != shingle_hashes("words two", 5)[0]
    # shared shingles of two texts hash equal: Jaccard over hashes equals Jaccard over strings
    a, b = "one two three four five six seven", "zero two three four five six eight"
    ha, hb = set(shingle_hashes(a, 3).tolist()), set(shingle_hashes(b, 3).tolist())
    assert len(ha & hb) / len(ha | hb) == jaccard(shingles(a, 3), shingles(b, 3)) == 3 / 7

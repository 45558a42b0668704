"""Exact verification of LSH candidates (issue #19): candidate pairs per bucket, the first earlier candidate
with shingle Jaccard >= threshold per later document, and the on-disk shingle sets stage 1 writes."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from orchestrator.config import ConfigError
from orchestrator.config.data_prep import DataPrepDataConfig, MinHashConfig
from orchestrator.data.corpus import Vocabulary, edit_words, write_jsonl
from orchestrator.data.dedup import near_row_bytes
from orchestrator.data.inputs import resolve_partitions
from orchestrator.data.minhash import candidate_pairs, exact_jaccard, verify_pairs
from orchestrator.data.partition import process_partition
from orchestrator.data.shingle_store import ShingleStore, ShingleWriter
from orchestrator.data.steps import DocumentSteps


def test_candidate_pairs_per_bucket_distinct_and_capped():
    keys = np.array([7, 7, 7, 7, 9, 9, 7], np.uint64)
    orders = np.array([30, 10, 20, 40, 20, 10, 50])
    a, b = candidate_pairs(keys, orders, max_comparisons=16)
    got = set(zip(a.tolist(), b.tolist()))
    assert got == {(10, 20), (10, 30), (20, 30), (10, 40), (20, 40), (30, 40), (10, 50), (20, 50), (30, 50),
                   (40, 50)}  # (10, 20) from both buckets, once
    a, b = candidate_pairs(keys, orders, max_comparisons=2)  # each member vs the first two only
    assert set(zip(a.tolist(), b.tolist())) == {(10, 20), (10, 30), (20, 30), (10, 40), (20, 40), (10, 50), (20, 50)}
    assert [len(x) for x in candidate_pairs(np.array([1, 2], np.uint64), np.array([1, 2]), 16)] == [0, 0]


def test_exact_jaccard_and_first_match_per_later_document():
    s = {1: np.arange(0, 10, dtype=np.uint64), 2: np.arange(0, 10, dtype=np.uint64),
         3: np.arange(2, 10, dtype=np.uint64), 4: np.arange(100, 110, dtype=np.uint64),
         5: np.empty(0, np.uint64), 6: np.empty(0, np.uint64)}
    assert exact_jaccard(s[1], s[3]) == 0.8 and exact_jaccard(s[1], s[4]) == 0.0 and exact_jaccard(s[5], s[6]) == 1.0
    a, b = verify_pairs(np.array([1, 2, 1, 3, 5]), np.array([3, 3, 4, 4, 6]), s.__getitem__, 0.8)
    assert list(zip(a.tolist(), b.tolist())) == [(1, 3), (5, 6)]  # 3 -> its earliest match 1; 4 matches none
    a, b = verify_pairs(np.array([1]), np.array([3]), s.__getitem__, 0.81)
    assert len(a) == 0  # 0.8 < 0.81: not a duplicate, however close the signatures


def test_shingle_store_round_trip(tmp_path):
    w = ShingleWriter(tmp_path, "part-00003")
    sets = {(3 << 32) | 0: np.array([5, 9, 11], np.uint64), (3 << 32) | 2: np.empty(0, np.uint64),
            (3 << 32) | 5: np.array([1, 2**63 + 7], np.uint64)}
    for order, h in sets.items():
        w.add(order, h)
    w.close()
    store = ShingleStore(tmp_path)
    for order, h in sets.items():
        assert store.get(order).tolist() == h.tolist()
    with pytest.raises(KeyError):
        store.get((3 << 32) | 1)
    empty = ShingleWriter(tmp_path, "part-00004")
    empty.close()
    with pytest.raises(KeyError):
        ShingleStore(tmp_path).get(4 << 32)


def test_stage1_writes_the_shingle_sets_only_for_exact_verification(tmp_path):
    rng = random.Random(0)
    v = Vocabulary()
    base = v.document(rng)
    recs = [{"id": "a", "text": base}, {"id": "junk", "text": "Too short."}, {"id": "b", "text": edit_words(base, 0.02, rng, v)}]
    write_jsonl(tmp_path / "in.jsonl", recs)
    cfg = DataPrepDataConfig(input=str(tmp_path / "in.jsonl"))
    _, parts = resolve_partitions(tmp_path, cfg)
    process_partition(parts[0], cfg, tmp_path / "work")
    store = ShingleStore(tmp_path / "work/stage1/shingles")
    steps = DocumentSteps(cfg)
    a, b = store.get(0), store.get(2)  # orders 0 and 2 (the junk line, order 1, was removed by a filter)
    assert a.tolist() == steps.shingle_hashes(steps.normalize(base)).tolist() and np.all(np.diff(a.astype(object)) > 0)
    assert 0.75 < exact_jaccard(a, b) < 1
    with pytest.raises(KeyError):
        store.get(1)
    est = DataPrepDataConfig(input=str(tmp_path / "in.jsonl"), minhash=MinHashConfig(verification="estimate"))
    process_partition(parts[0], est, tmp_path / "work-est")
    assert not (tmp_path / "work-est/stage1/shingles").exists()


def test_config_and_row_sizes():
    with pytest.raises(ConfigError, match="data.minhash.verification"):
        MinHashConfig(verification="exact")
    mh = MinHashConfig()
    assert mh.verification == "jaccard" and (mh.num_bands, mh.rows_per_band) == (20, 6)
    assert near_row_bytes(20, 6, with_sig=False) == 16 + 32 and near_row_bytes(20, 6) == 16 + 480 + 32
    assert json.dumps(mh.threshold) == "0.8"


def test_near_dedup_plan_says_which_verification_and_its_cost():
    from orchestrator.data.dedup import near_dedup_plan

    plan = near_dedup_plan(DataPrepDataConfig())
    assert plan["near_dedup_verification"] == "jaccard" and "8 bytes per distinct shingle" in plan["near_dedup_verification_cost"]
    assert plan["lsh_candidate_probability_at_threshold"] == pytest.approx(1 - (1 - 0.8**6) ** 20, abs=1e-4)
    assert plan["near_dedup_shuffle_bytes_per_doc"] == 20 * (16 + 32)
    assert plan["near_dedup_docs_per_bucket"] == (32 << 20) // (20 * 48)
    est = near_dedup_plan(DataPrepDataConfig(minhash=MinHashConfig(verification="estimate")))
    assert est["near_dedup_shuffle_bytes_per_doc"] == 20 * (16 + 480 + 32) and "sd ~0.037" in est["near_dedup_verification_cost"]

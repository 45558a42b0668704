"""Deterministic, rank-aware, resumable sampling; held-out split; step records; MFU."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.training.metrics import StepLog, mfu
from orchestrator.training.sampler import StepSampler, split_heldout


def sampler(rank: int, dp: int = 2, n: int = 10, gb: int = 4, mb: int = 1, seed: int = 0) -> StepSampler:
    return StepSampler(indices=np.arange(n), global_batch=gb, micro_batch=mb, dp_rank=rank, dp_size=dp, seed=seed)


def test_ranks_partition_each_global_batch():
    s0, s1 = sampler(0, n=12), sampler(1, n=12)  # batches never straddle epochs here
    for _ in range(5):
        a, b = np.concatenate(s0.next_step()), np.concatenate(s1.next_step())
        assert len(a) == len(b) == 2 and not set(a) & set(b)


def test_each_epoch_is_a_permutation_and_epochs_differ():
    s = sampler(0, dp=1, n=8, gb=4)
    e0 = np.concatenate([np.concatenate(s.next_step()) for _ in range(2)])
    e1 = np.concatenate([np.concatenate(s.next_step()) for _ in range(2)])
    assert sorted(e0) == sorted(e1) == list(range(8)) and not np.array_equal(e0, e1)
    assert s.epoch == 2


def test_wraps_epochs_mid_batch():
    s = sampler(0, dp=1, n=10, gb=4)
    seen = [np.concatenate(s.next_step()) for _ in range(3)]  # 12 blocks: crosses the epoch boundary
    assert sorted(np.concatenate(seen)[:10]) == list(range(10))


def test_resume_from_state_continues_identically():
    a = sampler(1, seed=5)
    for _ in range(3):
        a.next_step()
    b = sampler(1, seed=5)
    b.load_state_dict(a.state_dict())
    for _ in range(4):
        assert [x.tolist() for x in a.next_step()] == [x.tolist() for x in b.next_step()]


def test_micro_batches():
    out = sampler(0, dp=2, gb=8, mb=2).next_step()
    assert [len(x) for x in out] == [2, 2]


def test_heldout_split_is_stable_disjoint_and_complete():
    tr, ev = split_heldout(100, 0.05, "abc")
    tr2, ev2 = split_heldout(100, 0.05, "abc")
    assert np.array_equal(ev, ev2) and len(ev) == 5 and not set(tr) & set(ev)
    assert sorted(np.concatenate([tr, ev])) == list(range(100))
    assert not np.array_equal(split_heldout(100, 0.05, "xyz")[1], ev)
    assert len(split_heldout(10, 0.0, "abc")[1]) == 0


def test_steplog_keeps_the_last_record_per_step(tmp_path):
    log = StepLog(tmp_path / "steps.jsonl")
    log.append(1, {"loss": 3.0})
    log.append(2, {"loss": 2.5})
    log.append(2, {"loss": 2.4})  # recomputed after a recovery
    with open(tmp_path / "steps.jsonl", "a") as f:
        f.write('{"step": 3, "lo')  # torn by a crash
    assert log.read() == {1: {"loss": 3.0}, 2: {"loss": 2.4}}


def test_mfu():
    # 1B params, 100k tokens/s on 2 workers of 989 TFLOP/s peak
    assert mfu(10**9, 1e5, 989.0, 2) == pytest.approx(6e14 / 1.978e15)
    assert mfu(10, 1.0, 0.0, 1) == 0.0

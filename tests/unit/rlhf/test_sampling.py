"""Dynamic sampling bookkeeping and DAPO's overlong penalty against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from orchestrator.rlhf.sampling import (GroupRefill, group_reward_stats, informative_flags, informative_groups,
                                        overlong_penalty)

T = torch.tensor


def test_groups_with_all_equal_rewards_are_not_informative():
    scores = T([1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.5, 0.5])
    assert informative_groups(scores, 2).tolist() == [False, True, False, False]
    assert informative_flags(scores, 4) == [True, True]
    stats = group_reward_stats(scores, 2)
    # group stds 0, sqrt(0.5), 0, 0
    assert stats["group_reward_std"] == pytest.approx(0.5 ** 0.5 / 4)
    assert stats["zero_std_group_fraction"] == 0.75


def test_overlong_penalty_ramps_inside_the_buffer():
    # budget 10, buffer 4: free up to 6, then -1/4 per token, -factor at 10 and beyond
    pen = overlong_penalty(T([3, 6, 7, 9, 10, 12]), max_length=10, buffer=4, factor=0.5)
    assert pen.tolist() == pytest.approx([0.0, 0.0, -0.125, -0.375, -0.5, -0.5])
    assert overlong_penalty(T([10, 12]), 10, 0).tolist() == [0.0, 0.0]


def test_refill_keeps_informative_groups_until_the_target():
    r = GroupRefill(target_groups=3, max_refills=5)
    r.add(["a", "b", "c"], [True, False, False])
    assert (r.done, r.shortfall) == (False, 2)
    r.add(["d", "e"], [False, True])
    assert (r.done, r.shortfall) == (False, 1)
    r.add(["f", "g"], [True, True])              # one more than needed: the extra is discarded
    assert r.done and r.result() == ["a", "e", "f"]
    assert r.stats() == {"groups_generated": 7, "groups_dropped": 3, "groups_kept": 3, "refill_rounds": 2,
                         "groups_short": 0}


def test_refill_stops_at_the_cap_and_reports_the_shortfall():
    r = GroupRefill(target_groups=4, max_refills=1)
    r.add([0, 1, 2, 3], [False, True, False, False])
    assert not r.done
    r.add([4, 5, 6], [False, False, False])
    assert r.done and r.result() == [1]
    assert r.stats()["groups_short"] == 3 and r.stats()["refill_rounds"] == 1
    with pytest.raises(AssertionError):
        r.add([7], [True])
    drop_only = GroupRefill(target_groups=2, max_refills=0)
    drop_only.add(["x", "y"], [True, False])
    assert drop_only.done and drop_only.result() == ["x"]

"""Critic-free advantage estimators against hand-computed values (GRPO, Dr.GRPO, RLOO, REINFORCE++)."""

from __future__ import annotations

import math

import pytest
import torch

from orchestrator.rlhf.advantages import (ADVANTAGE_ESTIMATORS, broadcast_to_tokens, compute_group_advantages,
                                          compute_token_advantages, group_ids, reward_to_go)

T = torch.tensor
# two prompts x group of 3: group 0 rewards (1, 0, 0), group 1 rewards (2, 2, 5)
SCORES = T([1.0, 0.0, 0.0, 2.0, 2.0, 5.0])


def close(a, b, tol=1e-5):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64), atol=tol)


def test_grpo_is_the_group_z_score_with_unbiased_std():
    # group 0: mean 1/3, unbiased std sqrt(((2/3)^2 + 2 (1/3)^2) / 2) = sqrt(1/3); group 1: mean 3, std sqrt(3)
    s0, s1 = math.sqrt(1 / 3), math.sqrt(3.0)
    adv = compute_group_advantages(SCORES, 3, "grpo", eps=0.0)
    assert close(adv, [(2 / 3) / s0, (-1 / 3) / s0, (-1 / 3) / s0, -1 / s1, -1 / s1, 2 / s1])


def test_dr_grpo_subtracts_the_group_mean_only():
    assert close(compute_group_advantages(SCORES, 3, "dr_grpo"), [2 / 3, -1 / 3, -1 / 3, -1.0, -1.0, 2.0])


def test_rloo_uses_the_mean_of_the_other_samples():
    # r_i - mean_{j != i}: 1 - 0, 0 - 0.5, 0 - 0.5, 2 - 3.5, 2 - 3.5, 5 - 2
    assert close(compute_group_advantages(SCORES, 3, "rloo"), [1.0, -0.5, -0.5, -1.5, -1.5, 3.0])


def test_reinforce_pp_whitens_over_the_batch_without_a_group_baseline():
    # batch mean 10/6, unbiased std over the 6 scores
    mean = 10 / 6
    std = math.sqrt(sum((x - mean) ** 2 for x in SCORES.tolist()) / 5)
    assert close(compute_group_advantages(SCORES, 3, "reinforce_pp", eps=0.0), (SCORES - mean) / std)
    # no grouping needed: group_size 1 is fine
    assert close(compute_group_advantages(SCORES, 1, "reinforce_pp", eps=0.0), (SCORES - mean) / std)


def test_reinforce_pp_baseline_subtracts_group_mean_then_whitens():
    centred = T([2 / 3, -1 / 3, -1 / 3, -1.0, -1.0, 2.0])   # batch mean 0
    std = math.sqrt(float((centred ** 2).sum()) / 5)        # (4/9 + 1/9 + 1/9 + 1 + 1 + 4) / 5 = 6.666.../5
    assert close(compute_group_advantages(SCORES, 3, "reinforce_pp_baseline", eps=0.0), centred / std)


@pytest.mark.parametrize("kind", sorted(ADVANTAGE_ESTIMATORS))
def test_identical_rewards_give_zero_advantage(kind):
    adv = compute_group_advantages(T([0.7, 0.7, 0.7, 0.7]), 2, kind)
    assert bool((adv == 0).all()) and bool(torch.isfinite(adv).all())


@pytest.mark.parametrize("kind", ["grpo", "dr_grpo", "rloo", "reinforce_pp_baseline"])
def test_group_of_one_is_refused_by_estimators_needing_a_group(kind):
    assert ADVANTAGE_ESTIMATORS[kind].min_group_size == 2
    with pytest.raises(ValueError, match=f"{kind}.*>= 2 samples per group, got 1"):
        compute_group_advantages(T([1.0, 0.0]), 1, kind)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="unknown advantage estimator 'ppo'"):
        compute_group_advantages(SCORES, 3, "ppo")
    with pytest.raises(ValueError, match="do not split into groups of 4"):
        compute_group_advantages(SCORES, 4, "grpo")
    with pytest.raises(ValueError, match=r"non-finite scores at rows \[1\]"):
        compute_group_advantages(T([1.0, float("nan"), 0.0, 1.0]), 2, "grpo")


def test_group_labels_equal_consecutive_groups_and_may_be_interleaved():
    labels = T([7, 3, 7, 3, 7, 3])   # the same two groups of three, interleaved
    interleaved = T([1.0, 2.0, 0.0, 2.0, 0.0, 5.0])
    adv = compute_group_advantages(interleaved, labels, "rloo")
    assert close(adv, [1.0, -1.5, -0.5, -1.5, -0.5, 3.0])
    assert group_ids(4, 2).tolist() == [0, 0, 1, 1]
    # unequal group sizes with labels: group (a) has 2 samples, group (b) 3
    adv = compute_group_advantages(T([1.0, 3.0, 0.0, 0.0, 3.0]), T([0, 0, 1, 1, 1]), "dr_grpo")
    assert close(adv, [-1.0, 1.0, -1.0, -1.0, 2.0])


def test_broadcast_and_reward_to_go_leave_padding_at_zero_even_with_nan():
    mask = T([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert close(broadcast_to_tokens(T([2.0, -1.0]), mask), [[2.0, 2.0, 0.0], [-1.0, 0.0, 0.0]])
    r = T([[0.5, 1.0, float("nan")], [2.0, float("inf"), 3.0]])
    assert close(reward_to_go(r, mask), [[1.5, 1.0, 0.0], [2.0, 0.0, 0.0]])


def test_token_advantages_for_group_kinds_fold_summed_kl_into_the_score():
    mask = T([[1.0, 1.0], [1.0, 0.0]])
    kl = T([[0.5, 0.5], [0.25, float("nan")]])            # NaN in the padding must not leak
    # sequence scores 1 - 0.1 * 1.0 = 0.9 and 0 - 0.1 * 0.25 = -0.025; dr_grpo: -+0.4625
    adv = compute_token_advantages(T([1.0, 0.0]), mask, 2, "dr_grpo", kl=kl, kl_coef=0.1)
    assert close(adv, [[0.4625, 0.4625], [-0.4625, 0.0]])
    # without KL the token advantages are the group advantages broadcast
    assert close(compute_token_advantages(T([1.0, 0.0]), mask, 2, "grpo"),
                 broadcast_to_tokens(compute_group_advantages(T([1.0, 0.0]), 2, "grpo"), mask))


def test_reinforce_pp_token_returns_and_token_whitening():
    mask = T([[1.0, 1.0], [1.0, 0.0]])
    kl = T([[0.5, 1.0], [2.0, 7.0]])
    # token rewards: row 0 (-0.05, -0.1 + 1), row 1 (-0.2 + 0); reward-to-go 0.85, 0.9 | -0.2
    adv = compute_token_advantages(T([1.0, 0.0]), mask, 1, "reinforce_pp", kl=kl, kl_coef=0.1, eps=0.0)
    vals = T([0.85, 0.9, -0.2])
    expected = (vals - vals.mean()) / vals.std()
    assert close(adv[mask.bool()], expected) and float(adv[1, 1]) == 0.0


def test_token_whitening_matches_sample_whitening_up_to_bessel_for_equal_lengths():
    mask = torch.ones(6, 4)
    tok = compute_token_advantages(SCORES, mask, 3, "reinforce_pp_baseline", eps=0.0)
    seq = compute_group_advantages(SCORES, 3, "reinforce_pp_baseline", eps=0.0)
    # same centred values; the unbiased std divides by 24 - 1 tokens instead of 6 - 1 samples
    assert close(tok, seq[:, None].expand(6, 4) * math.sqrt(23 / 20))

"""RLHF math against hand-computed values: GAE, PPO losses, KL estimators, controllers, DPO, BT."""

from __future__ import annotations

import math

import pytest
import torch

from orchestrator.rlhf.advantages import compute_gae, shape_rewards, whiten_advantages
from orchestrator.rlhf.kl import AdaptiveKLController, FixedKLController, kl_penalty, make_kl_controller
from orchestrator.rlhf.losses import entropy_from_logits, logprobs_from_logits, policy_loss, value_loss
from orchestrator.rlhf.masked import explained_variance, masked_mean, masked_var
from orchestrator.rlhf.preference import RewardNormalizer, bradley_terry_loss, dpo_loss

T = torch.tensor


def close(a, b, tol=1e-6):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64),
                          atol=tol)


# --- GAE ---------------------------------------------------------------------------------------

def test_gae_gamma1_lambda1_is_reward_to_go_minus_value():
    rewards, values, mask = T([[0.0, 0.0, 1.0]]), T([[0.5, 0.6, 0.7]]), T([[1.0, 1.0, 1.0]])
    adv, ret = compute_gae(rewards, values, mask, gamma=1.0, lam=1.0)
    assert close(adv, [[0.5, 0.4, 0.3]])
    assert close(ret, [[1.0, 1.0, 1.0]])


def test_gae_hand_computed_gamma_lambda():
    # delta_1 = 1 - 0.2 = 0.8 (terminal); delta_0 = 0 + 0.9*0.2 - 0.5 = -0.32; A_0 = -0.32 + 0.9*0.5*0.8
    adv, ret = compute_gae(T([[0.0, 1.0]]), T([[0.5, 0.2]]), T([[1.0, 1.0]]), gamma=0.9, lam=0.5)
    assert close(adv, [[0.04, 0.8]])
    assert close(ret, [[0.54, 1.0]])


def test_gae_masked_tail_changes_nothing_and_is_zero():
    adv, ret = compute_gae(T([[0.0, 1.0, 5.0, 7.0]]), T([[0.5, 0.2, 9.0, -3.0]]), T([[1.0, 1.0, 0.0, 0.0]]),
                           gamma=0.9, lam=0.5)
    assert close(adv, [[0.04, 0.8, 0.0, 0.0]])
    assert close(ret, [[0.54, 1.0, 0.0, 0.0]])


def test_gae_rows_are_independent_and_lambda0_is_td():
    rewards = T([[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]])
    values = T([[0.1, 0.2, 0.3], [1.0, 1.0, 1.0]])
    mask = T([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    adv, _ = compute_gae(rewards, values, mask, gamma=1.0, lam=0.0)
    # lambda=0: A_t = r_t + V_{t+1} m_{t+1} - V_t
    assert close(adv, [[1.0 + 0.2 - 0.1, 2.0 - 0.2, 0.0], [0.0, 0.0, 3.0 - 1.0]])
    one, _ = compute_gae(rewards[1:], values[1:], mask[1:], gamma=1.0, lam=0.0)
    assert close(adv[1:], one)


def test_shape_rewards_puts_score_on_last_token_and_kl_everywhere():
    kl = T([[0.1, 0.2, 0.3], [0.5, 0.5, 0.5]])
    mask = T([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    r = shape_rewards(T([2.0, -1.0]), kl, mask, beta=0.5)
    assert close(r, [[-0.05, -0.1 + 2.0, 0.0], [-0.25, -0.25, -0.25 - 1.0]])


def test_whitening_over_masked_tokens():
    adv = T([[1.0, 2.0, 100.0], [3.0, 4.0, 5.0]])
    mask = T([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    w = whiten_advantages(adv, mask)
    assert abs(float(masked_mean(w, mask))) < 1e-6
    assert abs(float(masked_var(w, mask)) - 1.0) < 1e-5
    assert float(w[0, 2]) == 0.0  # padding never leaks (100 is excluded from the statistics too)
    vals = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    assert close(w[mask.bool()], (vals - 3.0) / vals.std(), 1e-5)


def test_explained_variance():
    ret, mask = T([[1.0, 2.0, 3.0, 4.0]]), T([[1.0, 1.0, 1.0, 1.0]])
    assert explained_variance(ret, ret, mask) == pytest.approx(1.0)
    assert explained_variance(torch.zeros_like(ret) + 2.5, ret, mask) == pytest.approx(0.0, abs=1e-6)


# --- policy / value losses ---------------------------------------------------------------------

@pytest.mark.parametrize("ratio,adv,expected,clipped", [
    (1.5, 1.0, -1.2, 1.0),   # positive advantage: gain capped at 1+eps
    (1.5, -1.0, 1.5, 0.0),   # negative advantage, ratio up: pessimistic unclipped term
    (0.5, 1.0, -0.5, 0.0),   # positive advantage, ratio down: unclipped term
    (0.5, -1.0, 0.8, 1.0),   # negative advantage: loss capped at 1-eps
    (1.1, 2.0, -2.2, 0.0),   # inside the trust region: plain ratio * A
])
def test_policy_loss_hand_computed(ratio, adv, expected, clipped):
    loss, stats = policy_loss(T([[math.log(ratio)]]), T([[0.0]]), T([[adv]]), T([[1.0]]), clip_eps=0.2)
    assert float(loss) == pytest.approx(expected, abs=1e-6)
    assert stats["clip_frac"] == clipped
    assert stats["approx_kl"] == pytest.approx(0.5 * math.log(ratio) ** 2)


def test_policy_loss_token_mean_ignores_masked_tokens():
    logp, old = T([[0.0, 0.0, 5.0]]), T([[0.0, 0.0, 0.0]])
    loss, _ = policy_loss(logp, old, T([[1.0, 3.0, 100.0]]), T([[1.0, 1.0, 0.0]]), clip_eps=0.2)
    assert float(loss) == pytest.approx(-(1.0 + 3.0) / 2)


def test_value_loss_hand_computed():
    # V moved 1.0 from V_old=0 towards R=2: clipped prediction 0.2 -> (1.8)^2 beats (1.0)^2
    loss, stats = value_loss(T([[1.0]]), T([[0.0]]), T([[2.0]]), T([[1.0]]), clip_eps=0.2)
    assert float(loss) == pytest.approx(0.5 * 3.24)
    assert stats["vf_clip_frac"] == 1.0
    # V moved away from R: the unclipped error is larger and is used
    loss, stats = value_loss(T([[-1.0]]), T([[0.0]]), T([[2.0]]), T([[1.0]]), clip_eps=0.2)
    assert float(loss) == pytest.approx(0.5 * 9.0)
    assert stats["vf_clip_frac"] == 0.0


def _random_minibatch(seed=0, B=6, Tn=7):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, Tn + 1, (B,), generator=g)
    mask = (torch.arange(Tn)[None, :] < lengths[:, None]).float()
    return (torch.randn(B, Tn, generator=g) * 0.3, torch.randn(B, Tn, generator=g) * 0.3,
            torch.randn(B, Tn, generator=g), mask)


@pytest.mark.parametrize("split", [[6], [3, 3], [1, 2, 3], [1, 1, 1, 1, 1, 1], [5, 1]])
def test_losses_are_micro_batch_invariant(split):
    logp0, old, adv, mask = _random_minibatch()
    values0, old_values, returns = logp0 * 2, old * 2, adv
    full_p = logp0.clone().requires_grad_(True)
    full_v = values0.clone().requires_grad_(True)
    lp, sp = policy_loss(full_p, old, adv, mask, 0.2)
    lv, _ = value_loss(full_v, old_values, returns, mask, 0.2)
    (lp + lv).backward()

    micro_p = logp0.clone().requires_grad_(True)
    micro_v = values0.clone().requires_grad_(True)
    n = float(mask.sum())
    total, clip_frac, start = 0.0, 0.0, 0
    for size in split:
        s = slice(start, start + size)
        a, st = policy_loss(micro_p[s], old[s], adv[s], mask[s], 0.2, num_tokens=n)
        b, _ = value_loss(micro_v[s], old_values[s], returns[s], mask[s], 0.2, num_tokens=n)
        (a + b).backward()  # gradient accumulation: plain sum, no division by the number of micro-batches
        total += float((a + b).detach())
        clip_frac += st["clip_frac"]
        start += size
    assert total == pytest.approx(float((lp + lv).detach()), abs=1e-6)
    assert clip_frac == pytest.approx(sp["clip_frac"], abs=1e-6)
    assert torch.allclose(micro_p.grad, full_p.grad, atol=1e-7)
    assert torch.allclose(micro_v.grad, full_v.grad, atol=1e-7)


def test_logprobs_and_entropy_from_logits():
    logits = torch.log(T([[[0.5, 0.25, 0.25]]]))
    assert close(logprobs_from_logits(logits, T([[1]])), [[math.log(0.25)]])
    assert close(entropy_from_logits(logits), [[-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))]])


# --- KL ------------------------------------------------------------------------------------------

def test_kl_estimators_hand_computed():
    logp, ref = T([math.log(0.5)]), T([math.log(0.25)])
    assert float(kl_penalty(logp, ref, "k1")) == pytest.approx(math.log(2))
    assert float(kl_penalty(logp, ref, "k2")) == pytest.approx(0.5 * math.log(2) ** 2)
    assert float(kl_penalty(logp, ref, "k3")) == pytest.approx(0.5 - 1 + math.log(2))
    assert float(kl_penalty(ref, ref, "k3")) == 0.0
    with pytest.raises(ValueError):
        kl_penalty(logp, ref, "k4")


def test_k1_and_k3_are_unbiased_estimates_of_the_true_kl():
    p, q = torch.tensor([0.7, 0.2, 0.1]), torch.tensor([0.4, 0.4, 0.2])
    true_kl = float((p * (p / q).log()).sum())
    g = torch.Generator().manual_seed(0)
    idx = torch.multinomial(p, 200_000, replacement=True, generator=g)
    logp, logq = p.log()[idx], q.log()[idx]
    assert float(kl_penalty(logp, logq, "k1").mean()) == pytest.approx(true_kl, abs=0.01)
    k3 = kl_penalty(logp, logq, "k3")
    assert float(k3.mean()) == pytest.approx(true_kl, abs=0.01) and bool((k3 >= 0).all())


def test_adaptive_kl_controller_hand_computed():
    c = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    c.update(current_kl=12.0, n_steps=256)   # error clipped at +0.2
    assert c.value == pytest.approx(0.1 * (1 + 0.2 * 256 / 10000))
    c2 = AdaptiveKLController(0.1, target=6.0, horizon=100)
    c2.update(current_kl=5.4, n_steps=10)    # error -0.1
    assert c2.value == pytest.approx(0.1 * (1 - 0.1 * 10 / 100))
    restored = make_kl_controller("adaptive", 1.0, 6.0, 100)
    restored.load_state_dict(c2.state_dict())
    assert restored.value == c2.value
    f = FixedKLController(0.05)
    f.update(100.0, 10)
    assert f.value == 0.05


# --- preference losses ---------------------------------------------------------------------------

def test_dpo_loss_hand_computed():
    loss, stats = dpo_loss(T([-1.0]), T([-3.0]), T([-2.0]), T([-2.0]), beta=0.5)
    # h = 0.5 * ((-1 + 2) - (-3 + 2)) = 1
    assert float(loss) == pytest.approx(-math.log(1 / (1 + math.exp(-1.0))))
    assert stats["margin"] == pytest.approx(1.0) and stats["accuracy"] == 1.0
    assert stats["chosen_reward"] == pytest.approx(0.5) and stats["rejected_reward"] == pytest.approx(-0.5)
    # policy == reference: loss log 2 regardless of beta
    loss0, _ = dpo_loss(T([-2.0]), T([-2.0]), T([-2.0]), T([-2.0]), beta=3.0)
    assert float(loss0) == pytest.approx(math.log(2))


def test_bradley_terry_hand_computed():
    loss, stats = bradley_terry_loss(T([2.0, 0.0]), T([0.0, 1.0]))
    expected = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(1.0))) / 2
    assert float(loss) == pytest.approx(expected)
    assert stats["accuracy"] == 0.5
    loss_m, _ = bradley_terry_loss(T([2.0]), T([0.0]), margin=1.0)
    assert float(loss_m) == pytest.approx(math.log1p(math.exp(-1.0)))


def test_reward_normalizer_running_stats_and_state():
    n = RewardNormalizer()
    xs = torch.tensor([1.0, 2.0, 3.0, 4.0])
    n.update(xs[:2])
    n.update(xs[2:])
    assert n.mean == pytest.approx(2.5) and n.std == pytest.approx(float(xs.std()))
    m = RewardNormalizer()
    m.load_state_dict(n.state_dict())
    assert close(m.normalize(xs), (xs - 2.5) / (xs.std() + 1e-6))


def test_reward_normalizer_prior_from_reward_model_stats():
    prior = RewardNormalizer(mean=2.0, std=1.0, count=100)
    assert prior.std == pytest.approx(1.0)
    prior.update(torch.tensor([2.0]))  # one sample at the prior mean barely moves it
    assert prior.mean == pytest.approx(2.0) and prior.std == pytest.approx(math.sqrt(99 / 100))

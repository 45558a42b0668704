"""Loss aggregation, clip-higher and the KL loss term against hand-computed values; padding never leaks."""

from __future__ import annotations

import math

import pytest
import torch

from orchestrator.rlhf.kl import kl_loss
from orchestrator.rlhf.losses import LOSS_AGGREGATIONS, aggregate_loss, policy_loss, value_loss

T = torch.tensor
NAN, INF = float("nan"), float("inf")
# row 0: 3 tokens (1, 2, 3); row 1: 1 token (10) then padding holding garbage
LOSS = T([[1.0, 2.0, 3.0], [10.0, NAN, INF]])
MASK = T([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])


@pytest.mark.parametrize("kind,expected", [
    ("token_mean", (1 + 2 + 3 + 10) / 4),                 # every token weighs the same
    ("seq_mean_token_mean", (2.0 + 10.0) / 2),            # per-response means 2 and 10
    ("seq_mean_token_sum_norm", (6 / 3 + 10 / 3) / 2),    # per-response sums over the constant T = 3
])
def test_aggregations_hand_computed_and_padding_ignored(kind, expected):
    assert float(aggregate_loss(LOSS, MASK, kind)) == pytest.approx(expected)


def test_aggregation_denominators_can_be_given():
    assert float(aggregate_loss(LOSS, MASK, "token_mean", num_tokens=8)) == pytest.approx(16 / 8)
    assert float(aggregate_loss(LOSS, MASK, "seq_mean_token_mean", num_seqs=4)) == pytest.approx(12 / 4)
    assert float(aggregate_loss(LOSS, MASK, "seq_mean_token_sum_norm", norm_length=8)) == pytest.approx((16 / 8) / 2)


def test_empty_rows_do_not_count_as_sequences():
    loss, mask = T([[4.0, 2.0], [7.0, 7.0]]), T([[1.0, 1.0], [0.0, 0.0]])
    assert float(aggregate_loss(loss, mask, "seq_mean_token_mean")) == pytest.approx(3.0)
    assert float(aggregate_loss(loss, mask, "seq_mean_token_sum_norm")) == pytest.approx(3.0)
    assert float(aggregate_loss(loss, torch.zeros(2, 2), "token_mean")) == 0.0


def test_unknown_aggregation_is_refused():
    with pytest.raises(ValueError, match="unknown loss aggregation 'sum'"):
        aggregate_loss(LOSS, MASK, "sum")


def _minibatch(seed=0, B=6, Tn=7):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, Tn + 1, (B,), generator=g)
    mask = (torch.arange(Tn)[None, :] < lengths[:, None]).float()
    return torch.randn(B, Tn, generator=g) * 0.3, torch.randn(B, Tn, generator=g) * 0.3, torch.randn(B, Tn, generator=g), mask


@pytest.mark.parametrize("kind", sorted(LOSS_AGGREGATIONS))
@pytest.mark.parametrize("split", [[6], [2, 4], [1, 1, 1, 1, 1, 1]])
def test_every_aggregation_is_micro_batch_invariant(kind, split):
    logp0, old, adv, mask = _minibatch()
    full = logp0.clone().requires_grad_(True)
    ref, _ = policy_loss(full, old, adv, mask, 0.2, clip_high=0.28, loss_agg=kind, norm_length=7)
    ref.backward()
    micro = logp0.clone().requires_grad_(True)
    n_tok, n_seq, total, start = float(mask.sum()), 6, 0.0, 0
    for size in split:
        s = slice(start, start + size)
        part, _ = policy_loss(micro[s], old[s], adv[s], mask[s], 0.2, n_tok, clip_high=0.28, loss_agg=kind,
                              num_seqs=n_seq, norm_length=7)
        part.backward()
        total += float(part.detach())
        start += size
    assert total == pytest.approx(float(ref.detach()), abs=1e-6)
    assert torch.allclose(micro.grad, full.grad, atol=1e-7)


@pytest.mark.parametrize("ratio,adv,expected,low,high", [
    (1.25, 1.0, -1.25, 0.0, 0.0),   # inside [1 - 0.2, 1 + 0.28]: not clipped (symmetric 0.2 would clip)
    (1.5, 1.0, -1.28, 0.0, 1.0),    # positive advantage: gain capped at 1 + clip_high
    (0.5, -1.0, 0.8, 1.0, 0.0),     # negative advantage: capped at 1 - clip_low
    (1.5, -1.0, 1.5, 0.0, 0.0),     # pessimistic unclipped term
])
def test_clip_higher_hand_computed(ratio, adv, expected, low, high):
    loss, st = policy_loss(T([[math.log(ratio)]]), T([[0.0]]), T([[adv]]), T([[1.0]]), 0.2, clip_high=0.28)
    assert float(loss) == pytest.approx(expected, abs=1e-6)
    assert (st["clip_frac_low"], st["clip_frac_high"], st["clip_frac"]) == (low, high, low + high)


def test_policy_and_value_losses_ignore_nan_and_inf_in_padding_including_gradients():
    logp = T([[-0.5, NAN], [-1.0, -INF]], requires_grad=True)
    old = T([[-0.5, INF], [-1.0, NAN]])
    adv = T([[2.0, NAN], [-1.0, INF]])
    mask = T([[1.0, 0.0], [1.0, 0.0]])
    loss, st = policy_loss(logp, old, adv, mask, 0.2)
    loss.backward()
    assert float(loss.detach()) == pytest.approx((-2.0 + 1.0) / 2) and all(math.isfinite(v) for v in st.values())
    assert logp.grad.tolist() == [[-1.0, 0.0], [0.5, 0.0]]
    values = T([[1.0, NAN]], requires_grad=True)
    vl, _ = value_loss(values, T([[1.0, INF]]), T([[2.0, NAN]]), T([[1.0, 0.0]]), 0.2)
    vl.backward()
    assert float(vl.detach()) == pytest.approx(0.5) and values.grad.tolist() == [[-1.0, 0.0]]


def test_kl_loss_hand_computed_and_masked():
    logp = T([[math.log(0.5), NAN]], requires_grad=True)
    ref = T([[math.log(0.25), -INF]])
    mask = T([[1.0, 0.0]])
    loss, st = kl_loss(logp, ref, mask, "k3")
    loss.backward()
    assert float(loss.detach()) == pytest.approx(0.5 - 1 + math.log(2))   # exp(-log 2) - 1 + log 2
    assert st["kl_k1"] == pytest.approx(math.log(2))
    # d k3 / d logp = 1 - exp(ref - logp) = 1 - 0.5; padding gets exactly 0
    assert logp.grad[0].tolist() == pytest.approx([0.5, 0.0])
    k2, _ = kl_loss(T([[0.0, 1.0], [2.0, 5.0]]), torch.zeros(2, 2), T([[1.0, 1.0], [1.0, 0.0]]), "k2",
                    "seq_mean_token_mean")
    assert float(k2) == pytest.approx(((0 + 0.5) / 2 + 2.0) / 2)

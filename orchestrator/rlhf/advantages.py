"""Advantage estimation: GAE for PPO and the critic-free group estimators (GRPO, Dr.GRPO, RLOO, REINFORCE++).

Token tensors are ``[batch, T]`` over the response tokens; ``mask`` is 1 on real response tokens and 0
on the padding after EOS. A position whose successor is masked is terminal: nothing is bootstrapped
from the padding, so a masked tail never changes the advantages of the real tokens, and NaN/inf in the
padding never leaks (masked positions are selected away, never multiplied by 0).

Critic-free estimators are named pure functions in :data:`ADVANTAGE_ESTIMATORS` (the registry pattern
of verl's ``core_algos``): each maps the ``[B]`` sequence scores and the group id of every sample to
one advantage per sample. :func:`compute_group_advantages` is that sequence-level view;
:func:`compute_token_advantages` is what a trainer calls (KL in the reward, token broadcast, and
REINFORCE++'s whitening over every response token of the batch).
"""

from __future__ import annotations

import torch

from dataclasses import dataclass
from typing import Callable, Optional, Union

from orchestrator.rlhf.masked import masked_mean, whiten, zero_outside

__all__ = ["compute_gae", "whiten_advantages", "shape_rewards", "AdvantageEstimator", "ADVANTAGE_ESTIMATORS",
           "register_advantage", "get_estimator", "group_ids", "compute_group_advantages", "compute_token_advantages",
           "broadcast_to_tokens", "reward_to_go"]


@torch.no_grad()
def compute_gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
                gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE(gamma, lambda) advantages and the value targets (returns).

    .. math::
        \\delta_t = r_t + \\gamma V_{t+1} m_{t+1} - V_t, \\qquad
        A_t = \\delta_t + \\gamma\\lambda m_{t+1} A_{t+1}, \\qquad R_t = A_t + V_t

    With gamma = lambda = 1 and a single terminal reward, ``A_t = sum_{k>=t} r_k - V_t``.

    Args:
        rewards: per-token rewards (KL penalty plus the score on the last token).
        values: critic values V(s_t) of the state before each response token.
        mask: 1 on response tokens, 0 on padding.
        gamma: discount.
        lam: GAE lambda.

    Returns:
        ``(advantages, returns)``, both zero outside the mask.
    """
    mask = mask.to(values.dtype)
    rewards, values = zero_outside(rewards, mask), zero_outside(values, mask)
    T = rewards.shape[1]
    advantages = torch.zeros_like(rewards)
    next_adv = torch.zeros_like(rewards[:, 0])
    next_value = torch.zeros_like(rewards[:, 0])
    next_mask = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(T)):
        delta = rewards[:, t] + gamma * next_value * next_mask - values[:, t]
        next_adv = delta + gamma * lam * next_mask * next_adv
        advantages[:, t] = next_adv
        next_value, next_mask = values[:, t], mask[:, t]
    advantages = zero_outside(advantages, mask)
    returns = zero_outside(advantages + values, mask)
    return advantages, returns


def whiten_advantages(advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero-mean, unit-variance advantages over every response token of the rollout batch."""
    return whiten(advantages, mask, shift_mean=True)


@torch.no_grad()
def shape_rewards(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, beta: float) -> torch.Tensor:
    """Per-token rewards: ``-beta * kl_t`` on every response token plus the sequence score on the last.

    Args:
        scores: ``[batch]`` reward-model (or rule) scores of the whole response.
        kl: ``[batch, T]`` per-token KL estimate against the reference (see :mod:`kl`).
        mask: ``[batch, T]`` response mask; each row must have at least one token.
        beta: KL coefficient.
    """
    mask = mask.to(kl.dtype)
    rewards = zero_outside(-beta * kl, mask)
    last = (mask.sum(dim=1).long() - 1).clamp(min=0)
    rewards[torch.arange(rewards.shape[0]), last] += scores.to(rewards.dtype)
    return rewards


# --- critic-free estimators ------------------------------------------------------------------------

Baseline = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]


@dataclass(frozen=True)
class AdvantageEstimator:
    """A named critic-free estimator.

    Attributes:
        name: the ``grpo.advantage`` value.
        fn: ``(scores [B], group ids [B] in 0..G-1, eps) -> [B]`` per-sample advantages before any
            batch whitening.
        min_group_size: samples per prompt the estimator needs (a baseline from the *other* samples
            of a group needs at least 2).
        global_whiten: whiten the advantages over the whole batch afterwards (REINFORCE++, Hu 2025).
        token_returns: with KL in the reward, each token gets its own reward-to-go (REINFORCE++)
            instead of one sequence score ``score - beta * sum_t kl_t``.
    """

    name: str
    fn: Baseline
    min_group_size: int
    global_whiten: bool = False
    token_returns: bool = False


ADVANTAGE_ESTIMATORS: dict[str, AdvantageEstimator] = {}


def register_advantage(name: str, min_group_size: int, global_whiten: bool = False,
                       token_returns: bool = False) -> Callable[[Baseline], Baseline]:
    """Decorator adding a baseline function to :data:`ADVANTAGE_ESTIMATORS` under ``name``."""
    def wrap(fn: Baseline) -> Baseline:
        assert name not in ADVANTAGE_ESTIMATORS, f"advantage estimator {name!r} registered twice"
        ADVANTAGE_ESTIMATORS[name] = AdvantageEstimator(name, fn, min_group_size, global_whiten, token_returns)
        return fn
    return wrap


def _group_mean_std(scores: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample group mean, unbiased group std (0 for a group of one) and group size."""
    num_groups = int(ids.max()) + 1
    zeros = torch.zeros(num_groups, dtype=scores.dtype, device=scores.device)
    counts = zeros.index_add(0, ids, torch.ones_like(scores))
    mean = zeros.index_add(0, ids, scores) / counts
    sq = zeros.index_add(0, ids, (scores - mean[ids]) ** 2)
    std = (sq / (counts - 1).clamp(min=1)).sqrt()
    return mean[ids], std[ids], counts[ids]


def _standardise(x: torch.Tensor, eps: float) -> torch.Tensor:
    """``(x - mean) / (std + eps)`` over all of ``x`` (unbiased std; 0 for a single element)."""
    n = x.numel()
    std = x.std() if n > 1 else torch.zeros((), dtype=x.dtype)
    return (x - x.mean()) / (std + eps)


@register_advantage("grpo", min_group_size=2)
def _grpo(scores: torch.Tensor, ids: torch.Tensor, eps: float) -> torch.Tensor:
    """Group z-score ``(r - mean_g) / (std_g + eps)`` (Shao et al. 2024, DeepSeekMath eq. 3); the
    unbiased std as TRL and verl compute it."""
    mean, std, _ = _group_mean_std(scores, ids)
    return (scores - mean) / (std + eps)


@register_advantage("dr_grpo", min_group_size=2)
def _dr_grpo(scores: torch.Tensor, ids: torch.Tensor, eps: float) -> torch.Tensor:  # noqa: ARG001
    """``r - mean_g``: no division by the group std, which over-weights easy/hard prompts whose
    rewards barely vary (Liu et al. 2025, "Understanding R1-Zero-Like Training")."""
    mean, _, _ = _group_mean_std(scores, ids)
    return scores - mean


@register_advantage("rloo", min_group_size=2)
def _rloo(scores: torch.Tensor, ids: torch.Tensor, eps: float) -> torch.Tensor:  # noqa: ARG001
    """Leave-one-out baseline ``r_i - mean_{j != i} r_j = n/(n-1) (r_i - mean_g)`` (Ahmadian et al. 2024)."""
    mean, _, n = _group_mean_std(scores, ids)
    return (scores - mean) * n / (n - 1)


@register_advantage("reinforce_pp", min_group_size=1, global_whiten=True, token_returns=True)
def _reinforce_pp(scores: torch.Tensor, ids: torch.Tensor, eps: float) -> torch.Tensor:  # noqa: ARG001
    """No per-prompt baseline; the batch whitening is the baseline (Hu 2025, REINFORCE++)."""
    return scores.clone()


@register_advantage("reinforce_pp_baseline", min_group_size=2, global_whiten=True)
def _reinforce_pp_baseline(scores: torch.Tensor, ids: torch.Tensor, eps: float) -> torch.Tensor:  # noqa: ARG001
    """Group mean subtracted, then batch whitening (Hu 2025, REINFORCE++-baseline)."""
    mean, _, _ = _group_mean_std(scores, ids)
    return scores - mean


def get_estimator(kind: str) -> AdvantageEstimator:
    """The registered estimator ``kind``; ``ValueError`` naming the choices otherwise."""
    if kind not in ADVANTAGE_ESTIMATORS:
        raise ValueError(f"unknown advantage estimator {kind!r}; use one of {sorted(ADVANTAGE_ESTIMATORS)}")
    return ADVANTAGE_ESTIMATORS[kind]


def group_ids(num_samples: int, group_size: Union[int, torch.Tensor]) -> torch.Tensor:
    """Group index 0..G-1 of every sample.

    Args:
        num_samples: B.
        group_size: an int (each prompt's ``group_size`` samples are consecutive) or a ``[B]`` tensor
            of arbitrary group labels (e.g. prompt uids; the numbering of the result is arbitrary).
    """
    if isinstance(group_size, torch.Tensor):
        assert group_size.shape == (num_samples,), f"group ids {tuple(group_size.shape)} for {num_samples} samples"
        return torch.unique(group_size, return_inverse=True)[1]
    if group_size < 1 or num_samples % group_size:
        raise ValueError(f"{num_samples} samples do not split into groups of {group_size}")
    return torch.arange(num_samples) // group_size


def compute_group_advantages(scores: torch.Tensor, group_size: Union[int, torch.Tensor], kind: str,
                             eps: float = 1e-6) -> torch.Tensor:
    """One advantage per sample from its sequence score and its group's scores.

    Args:
        scores: ``[B]`` scores, ``B = prompts x group_size``.
        group_size: samples per prompt, each prompt's samples consecutive; or ``[B]`` group labels.
        kind: a key of :data:`ADVANTAGE_ESTIMATORS`.
        eps: added to a std before dividing (a group of identical rewards gets advantage 0).

    Returns:
        ``[B]`` advantages (float32 or the scores' float dtype); the caller broadcasts them over each
        response's tokens (:func:`broadcast_to_tokens`). The REINFORCE++ kinds are whitened here over
        the B samples; :func:`compute_token_advantages` whitens over tokens instead.

    Raises:
        ValueError: unknown ``kind``, a group smaller than the estimator needs, or non-finite scores.
    """
    est = get_estimator(kind)
    adv = _per_sample(est, scores.detach(), group_size, eps)
    return _standardise(adv, eps) if est.global_whiten else adv


def _per_sample(est: AdvantageEstimator, scores: torch.Tensor, group_size: Union[int, torch.Tensor],
                eps: float) -> torch.Tensor:
    """``est.fn`` on checked scores and group ids (before any batch whitening)."""
    scores = _check_finite(scores if scores.is_floating_point() else scores.float())
    ids = group_ids(scores.shape[0], group_size)
    smallest = int(torch.bincount(ids).min())
    if smallest < est.min_group_size:
        raise ValueError(f"advantage {est.name!r} needs >= {est.min_group_size} samples per group, got {smallest}")
    return est.fn(scores, ids, eps)


def _check_finite(scores: torch.Tensor) -> torch.Tensor:
    bad = ~torch.isfinite(scores)
    if bool(bad.any()):
        raise ValueError(f"non-finite scores at rows {torch.nonzero(bad).flatten().tolist()}")
    return scores


def broadcast_to_tokens(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[B]`` per-sample values repeated over each row's response tokens, 0 on the padding."""
    return zero_outside(values[:, None].expand(mask.shape).to(torch.float32), mask)


def reward_to_go(token_rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``G_t = sum_{k >= t} r_k`` over the response tokens (gamma = 1), 0 on the padding."""
    r = zero_outside(token_rewards, mask)
    return zero_outside(r.flip(1).cumsum(1).flip(1), mask)


def _whiten_tokens(x: torch.Tensor, mask: torch.Tensor, eps: float) -> torch.Tensor:
    """``(x - mean) / (std + eps)`` over the masked tokens of the batch (unbiased std)."""
    n = mask.sum()
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask) * n / (n - 1).clamp(min=1)
    return zero_outside((x - mean) / (var.sqrt() + eps), mask)


@torch.no_grad()
def compute_token_advantages(scores: torch.Tensor, mask: torch.Tensor, group_size: Union[int, torch.Tensor],
                             kind: str, kl: Optional[torch.Tensor] = None, kl_coef: float = 0.0,
                             eps: float = 1e-6) -> torch.Tensor:
    """``[B, T]`` advantages of a critic-free estimator, ready for :func:`losses.policy_loss`.

    Args:
        scores: ``[B]`` sequence scores (reward functions / reward model, overlong penalty included).
        mask: ``[B, T]`` response mask; every row needs at least one token.
        group_size: as in :func:`compute_group_advantages`.
        kind: estimator name.
        kl: ``[B, T]`` per-token KL estimate when the KL goes in the reward (``grpo.kl_mode=reward``);
            None when it is a loss term or off.
        kl_coef: beta of the in-reward KL.
        eps: see :func:`compute_group_advantages`.

    With KL in the reward, REINFORCE++ gives each token its reward-to-go
    ``score - beta sum_{k>=t} kl_k`` (Hu 2025); the group estimators score the sequence
    ``score - beta sum_t kl_t``. The REINFORCE++ kinds are then whitened over every response token
    of the batch (as OpenRLHF and verl do), so a long response weighs more than a short one.
    """
    est = get_estimator(kind)
    mask = mask.to(torch.float32)
    if est.token_returns and kl is not None and kl_coef:
        per_token = reward_to_go(shape_rewards(_check_finite(scores.float()), kl.float(), mask, kl_coef), mask)
        return _whiten_tokens(per_token, mask, eps) if est.global_whiten else per_token
    seq = scores.float()
    if kl is not None and kl_coef:
        seq = seq - kl_coef * zero_outside(kl.float(), mask).sum(dim=1)
    per_token = broadcast_to_tokens(_per_sample(est, seq, group_size, eps), mask)
    return _whiten_tokens(per_token, mask, eps) if est.global_whiten else per_token

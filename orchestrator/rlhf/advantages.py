"""Advantage estimation for PPO: generalised advantage estimation (Schulman et al., 2016).

All tensors are ``[batch, T]`` over the response tokens; ``mask`` is 1 on real response tokens and 0 on
the padding after EOS. A position whose successor is masked is terminal: nothing is bootstrapped
from the padding, so a masked tail never changes the advantages of the real tokens.
"""

from __future__ import annotations

import torch

from orchestrator.rlhf.masked import whiten

__all__ = ["compute_gae", "whiten_advantages", "shape_rewards"]


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
    rewards, values = rewards * mask, values * mask
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
    advantages = advantages * mask
    returns = (advantages + values) * mask
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
    rewards = -beta * kl * mask
    last = (mask.sum(dim=1).long() - 1).clamp(min=0)
    rewards[torch.arange(rewards.shape[0]), last] += scores.to(rewards.dtype)
    return rewards

"""PPO losses: clipped policy surrogate, clipped value loss, entropy bonus.

Aggregation (the choice every PPO implementation must make, and several got wrong): every loss is a
**token mean over the whole minibatch**, ``sum_{i,t} l_{i,t} m_{i,t} / sum_{i,t} m_{i,t}``. When a
minibatch is split into micro-batches for gradient accumulation, pass the minibatch's token count
as ``num_tokens`` to each micro-batch call and *sum* the micro-batch losses (no division by the
number of micro-batches): the total and its gradient are then identical to a single call on the
whole minibatch, whatever the split. Sequence-mean-then-batch-mean would weight short responses
more and change with the split; we do not use it.

Stats are returned as detached floats normalised the same way, so micro-batch stats also add up.
"""

from __future__ import annotations

from typing import Optional

import torch

from orchestrator.rlhf.masked import masked_mean

__all__ = ["policy_loss", "value_loss", "entropy_from_logits", "logprobs_from_logits"]


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                mask: torch.Tensor, clip_eps: float,
                num_tokens: Optional[float] = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped surrogate objective of PPO (Schulman et al., 2017), as a loss to minimise.

    ``l_t = max(-A_t r_t, -A_t clip(r_t, 1-eps, 1+eps))`` with ``r_t = exp(logp_t - old_logp_t)``.

    Args:
        logprobs: ``[B, T]`` log-probabilities of the sampled tokens under the current policy.
        old_logprobs: ``[B, T]`` the same under the policy that generated the rollout.
        advantages: ``[B, T]`` (whitened) advantages.
        mask: ``[B, T]`` response mask.
        clip_eps: ratio clip epsilon.
        num_tokens: token count of the whole minibatch (see module docstring); default this call's.

    Returns:
        ``(loss, stats)`` with stats ``clip_frac`` (share of tokens where the clipped term is
        active), ``approx_kl`` (``0.5 (logp - old)^2``, KL(old||new) to second order) and ``ratio``.
    """
    mask = mask.to(logprobs.dtype)
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    per_token = torch.maximum(unclipped, clipped)
    loss = masked_mean(per_token, mask, num_tokens)
    with torch.no_grad():
        stats = {
            "clip_frac": float(masked_mean((clipped > unclipped).to(mask.dtype), mask, num_tokens)),
            "approx_kl": float(masked_mean(0.5 * log_ratio**2, mask, num_tokens)),
            "ratio": float(masked_mean(ratio, mask, num_tokens)),
        }
    return loss, stats


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip_eps: float, num_tokens: Optional[float] = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped value loss: ``0.5 max((V - R)^2, (V_old + clip(V - V_old, -eps, eps) - R)^2)``.

    The value prediction may move at most ``clip_eps`` away from the rollout's value per update
    (PPO2 / OpenAI baselines). Same token-mean aggregation as :func:`policy_loss`.

    Returns:
        ``(loss, stats)`` with ``vf_clip_frac`` (share of tokens where the clipped term is larger).
    """
    mask = mask.to(values.dtype)
    clipped_values = old_values + torch.clamp(values - old_values, -clip_eps, clip_eps)
    unclipped = (values - returns) ** 2
    clipped = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped, clipped), mask, num_tokens)
    with torch.no_grad():
        stats = {"vf_clip_frac": float(masked_mean((clipped > unclipped).to(mask.dtype), mask, num_tokens))}
    return loss, stats


def logprobs_from_logits(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """``log softmax(logits)[tokens]`` per position; ``logits`` [B, T, V], ``tokens`` [B, T]."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return torch.gather(logp, 2, tokens.unsqueeze(-1)).squeeze(-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Per-position entropy ``H = logsumexp(z) - sum softmax(z) z`` of [B, T, V] logits."""
    logits = logits.float()
    p = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (p * logits).sum(dim=-1)

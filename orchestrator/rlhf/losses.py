"""Policy-gradient losses: clipped surrogate (symmetric or DAPO clip-higher), clipped value loss, entropy.

Aggregation (the choice every PPO implementation must make, and several got wrong) is named by
``loss_agg`` (:data:`LOSS_AGGREGATIONS`, see :func:`aggregate_loss`). PPO uses ``token_mean``: a
**token mean over the whole minibatch**, ``sum_{i,t} l_{i,t} m_{i,t} / sum_{i,t} m_{i,t}``. When a
minibatch is split into micro-batches for gradient accumulation, pass the minibatch's token count as
``num_tokens`` (and, for the sequence kinds, its sequence count as ``num_seqs``) to each micro-batch
call and *sum* the micro-batch losses (no division by the number of micro-batches): the total and
its gradient are then identical to a single call on the whole minibatch, whatever the split.

Masked positions are selected away on the inputs and the outputs (``torch.where``), so NaN or +-inf
log-probs or advantages in the padding change neither the loss nor the gradient.

Stats are returned as detached floats normalised the same way, so micro-batch stats also add up.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from orchestrator.rlhf.masked import masked_mean, zero_outside

__all__ = ["policy_loss", "value_loss", "entropy_from_logits", "logprobs_from_logits", "aggregate_loss",
           "LOSS_AGGREGATIONS"]


def _token_mean(loss: torch.Tensor, mask: torch.Tensor, num_tokens: Optional[float], num_seqs: Optional[float],
                norm_length: Optional[float]) -> torch.Tensor:  # noqa: ARG001
    return masked_mean(loss, mask, num_tokens)


def _seq_denominator(mask: torch.Tensor, num_seqs: Optional[float], dtype: torch.dtype) -> torch.Tensor:
    """Sequences with at least one token (a response cut to nothing carries no signal), or ``num_seqs``."""
    n = (mask.sum(dim=1) > 0).sum() if num_seqs is None else num_seqs
    return torch.as_tensor(n, dtype=dtype).clamp(min=1)


def _seq_mean_token_mean(loss: torch.Tensor, mask: torch.Tensor, num_tokens: Optional[float],  # noqa: ARG001
                         num_seqs: Optional[float], norm_length: Optional[float]) -> torch.Tensor:  # noqa: ARG001
    per_seq = zero_outside(loss, mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
    return per_seq.sum() / _seq_denominator(mask, num_seqs, loss.dtype)


def _seq_mean_token_sum_norm(loss: torch.Tensor, mask: torch.Tensor, num_tokens: Optional[float],  # noqa: ARG001
                             num_seqs: Optional[float], norm_length: Optional[float]) -> torch.Tensor:
    length = float(mask.shape[1]) if norm_length is None else float(norm_length)
    per_seq = zero_outside(loss, mask).sum(dim=1) / length
    return per_seq.sum() / _seq_denominator(mask, num_seqs, loss.dtype)


LOSS_AGGREGATIONS: dict[str, Callable[..., torch.Tensor]] = {
    "token_mean": _token_mean,
    "seq_mean_token_mean": _seq_mean_token_mean,
    "seq_mean_token_sum_norm": _seq_mean_token_sum_norm,
}


def aggregate_loss(per_token_loss: torch.Tensor, mask: torch.Tensor, kind: str = "token_mean", *,
                   num_tokens: Optional[float] = None, num_seqs: Optional[float] = None,
                   norm_length: Optional[float] = None) -> torch.Tensor:
    """Reduce a ``[B, T]`` per-token loss to a scalar.

    * ``token_mean``: ``sum_{i,t} l m / sum m`` - every token weighs the same, whatever its response's
      length (DAPO, Yu et al. 2025, sec. 3.3; verl's default).
    * ``seq_mean_token_mean``: mean over tokens within each response, then over responses - the original
      GRPO objective (Shao et al. 2024); a token of a short response weighs more.
    * ``seq_mean_token_sum_norm``: per-response token *sum* divided by a constant ``norm_length`` (the
      generation budget), then a mean over responses - Dr.GRPO (Liu et al. 2025): no length bias.

    Args:
        per_token_loss: ``[B, T]``; anything (also NaN/inf) at masked positions is ignored.
        mask: ``[B, T]`` response mask.
        kind: a key of :data:`LOSS_AGGREGATIONS`.
        num_tokens: ``token_mean`` denominator; default this call's token count. Pass the minibatch's
            when this is one micro-batch of it.
        num_seqs: sequence-kind denominator; default the rows of this call with >= 1 token.
        norm_length: ``seq_mean_token_sum_norm`` constant; default ``T`` (the padded response length;
            pass ``max_new_tokens`` so it stays constant across batches).
    """
    if kind not in LOSS_AGGREGATIONS:
        raise ValueError(f"unknown loss aggregation {kind!r}; use one of {sorted(LOSS_AGGREGATIONS)}")
    mask = mask.to(per_token_loss.dtype)
    return LOSS_AGGREGATIONS[kind](per_token_loss, mask, num_tokens, num_seqs, norm_length)


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                mask: torch.Tensor, clip_eps: float, num_tokens: Optional[float] = None, *,
                clip_high: Optional[float] = None, loss_agg: str = "token_mean", num_seqs: Optional[float] = None,
                norm_length: Optional[float] = None, token_weights: Optional[torch.Tensor] = None,
                ) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped surrogate objective of PPO (Schulman et al., 2017), as a loss to minimise.

    ``l_t = max(-A_t r_t, -A_t clip(r_t, 1 - eps_low, 1 + eps_high))`` with ``r_t = exp(logp_t - old_logp_t)``.
    ``eps_high > eps_low`` is DAPO's clip-higher (Yu et al. 2025): low-probability tokens with a positive
    advantage may grow further, which keeps the policy's entropy from collapsing.

    Args:
        logprobs: ``[B, T]`` log-probabilities of the sampled tokens under the current policy.
        old_logprobs: ``[B, T]`` the same under the policy that generated the rollout.
        advantages: ``[B, T]`` advantages.
        mask: ``[B, T]`` response mask.
        clip_eps: lower ratio clip epsilon (``eps_low``); also the upper one unless ``clip_high`` is set.
        num_tokens: token count of the whole minibatch (see module docstring); default this call's.
        clip_high: upper ratio clip epsilon; None = ``clip_eps`` (symmetric PPO clipping).
        loss_agg: aggregation, see :func:`aggregate_loss`.
        num_seqs: sequence count of the whole minibatch for the sequence aggregations.
        norm_length: Dr.GRPO's constant normaliser for ``seq_mean_token_sum_norm``.
        token_weights: ``[B, T]`` constant per-token weights of the clipped term, e.g. truncated
            importance-sampling weights ``min(pi_actor_old / pi_engine, cap)``
            (:func:`orchestrator.rlhf.mismatch.tis_weights`); None = 1.

    Returns:
        ``(loss, stats)`` with stats ``clip_frac`` (share of tokens where the clipped term is active),
        its split ``clip_frac_low`` (A < 0, ratio below 1 - eps_low) and ``clip_frac_high`` (A > 0,
        ratio above 1 + eps_high), ``approx_kl`` (``0.5 (logp - old)^2``, KL(old||new) to second
        order) and ``ratio``; all aggregated like the loss.
    """
    mask = mask.to(logprobs.dtype)
    high = clip_eps if clip_high is None else clip_high
    log_ratio = zero_outside(logprobs, mask) - zero_outside(old_logprobs, mask)
    adv = zero_outside(advantages.to(logprobs.dtype), mask)
    ratio = torch.exp(log_ratio)
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + high)
    per_token = torch.maximum(unclipped, clipped)
    if token_weights is not None:
        per_token = per_token * zero_outside(token_weights.detach().to(per_token.dtype), mask)

    def agg(x: torch.Tensor) -> torch.Tensor:
        return aggregate_loss(x, mask, loss_agg, num_tokens=num_tokens, num_seqs=num_seqs, norm_length=norm_length)

    loss = agg(per_token)
    with torch.no_grad():
        active = (clipped > unclipped).to(mask.dtype)
        stats = {
            "clip_frac": float(agg(active)),
            "clip_frac_low": float(agg(active * (adv < 0).to(mask.dtype))),
            "clip_frac_high": float(agg(active * (adv > 0).to(mask.dtype))),
            "approx_kl": float(agg(0.5 * log_ratio**2)),
            "ratio": float(agg(ratio)),
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
    values, old_values, returns = (zero_outside(x, mask) for x in (values, old_values, returns))
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

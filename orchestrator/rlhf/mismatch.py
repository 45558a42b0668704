"""Train-inference mismatch: the rollout engine samples from pi_engine, the trainer computes pi_actor.

With an inference engine (vLLM) the two differ slightly even on the same weights (other kernels, other
reduction orders; bf16 on GPU). PPO's ratio uses the actor's own recomputed log-probs as the "old" policy,
so the samples are off-policy by ``pi_actor_old / pi_engine``. Truncated importance sampling (TIS, Yao et
al. 2025, "Your efficient RL framework secretly brings you off-policy RL training") weights each token's
policy-gradient term by that ratio, capped from above so a rare token cannot blow the gradient up.
Pure torch; masked positions never contribute.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch

from orchestrator.rlhf.masked import masked_mean, zero_outside


def tis_weights(actor_logprobs: torch.Tensor, engine_logprobs: torch.Tensor, mask: torch.Tensor,
                cap: Optional[float]) -> Optional[torch.Tensor]:
    """``min(exp(actor - engine), cap)`` per token (1 at masked positions), detached; None when ``cap`` is None."""
    if cap is None:
        return None
    m = mask.to(actor_logprobs.dtype)
    log_ratio = zero_outside(actor_logprobs.detach(), m) - zero_outside(engine_logprobs.detach().to(actor_logprobs.dtype), m)
    return torch.clamp(torch.exp(log_ratio), max=cap)


def mismatch_stats(actor_logprobs: torch.Tensor, engine_logprobs: torch.Tensor, mask: torch.Tensor,
                   cap: Optional[float] = None) -> dict[str, float]:
    """Per-step mismatch metrics over the response tokens.

    Returns:
        ``mismatch_logp_abs_mean`` (mean |actor - engine| log-prob, nats), ``mismatch_ratio_max`` and
        ``mismatch_ratio_min`` (extremes of ``pi_actor / pi_engine``) and, with a cap,
        ``tis_clipped_frac`` (share of tokens whose weight the cap truncated).
    """
    m = mask.to(torch.float64)
    diff = zero_outside(actor_logprobs.double(), m) - zero_outside(engine_logprobs.double(), m)
    on = m.bool()
    if not on.any():
        return {"mismatch_logp_abs_mean": 0.0, "mismatch_ratio_max": 1.0, "mismatch_ratio_min": 1.0}
    ratio = torch.exp(diff[on])
    out = {"mismatch_logp_abs_mean": float(masked_mean(diff.abs(), m)), "mismatch_ratio_max": float(ratio.max()),
           "mismatch_ratio_min": float(ratio.min())}
    if cap is not None:
        out["tis_clipped_frac"] = float((ratio > cap).double().mean())
    return out


def engine_mismatch(exp: dict[str, Any], engine_logprobs: Sequence[Optional[torch.Tensor]],
                    cap: Optional[float]) -> dict[str, float]:
    """Fold the rollout engine's log-probs into the experience: mismatch stats, and ``exp["tis_weights"]``
    when ``cap`` is set.

    Args:
        exp: the experience; its ``response_mask`` and ``old_logprobs`` (the actor's) are read.
        engine_logprobs: ``[b_i, R_i]`` pieces in ``exp``'s row order (actor ranks' shards for ppo, sampled
            groups for grpo), right-padded here to the mask's width.
        cap: ``rollout.tis_cap`` (None: metrics only).

    Returns:
        The stats; {} (``exp`` left alone) when the engine reports no log-probs (``hf``: it *is* the actor).
    """
    if not engine_logprobs or any(lp is None for lp in engine_logprobs):
        return {}
    from orchestrator.rlhf.rollout import pad_right

    mask, actor = exp["response_mask"], exp["old_logprobs"]
    engine = pad_right(list(engine_logprobs), 0.0)[:, :mask.shape[1]]
    if engine.shape[1] < mask.shape[1]:
        engine = torch.nn.functional.pad(engine, (0, mask.shape[1] - engine.shape[1]))
    exp["engine_logprobs"] = engine
    weights = tis_weights(actor, engine, mask, cap)
    if weights is not None:
        exp["tis_weights"] = weights
    return mismatch_stats(actor, engine, mask, cap)

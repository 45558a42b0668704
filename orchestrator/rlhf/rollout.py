"""Rollout tensors: from generated sequences to the PPO experience (pure torch, no Ray).

Layout: prompts are left-padded to a common length ``P``, so every row's response starts at column
``P``. ``response_mask`` [B, R] is 1 up to and including the first EOS (or all of a response cut at
``max_new_tokens``); the attention mask of the full sequence is ``cat(prompt_mask, response_mask)``
and position ids are ``cumsum(mask) - 1`` (what ``generate`` used), so forward passes over the full
sequence reproduce the generation distribution exactly.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import torch

from orchestrator.rlhf.advantages import compute_gae, shape_rewards, whiten_advantages
from orchestrator.rlhf.kl import kl_penalty
from orchestrator.rlhf.masked import explained_variance, masked_mean


def response_mask(responses: torch.Tensor, eos_id: int | Sequence[int]) -> torch.Tensor:
    """1 on response tokens up to and including the first EOS (or any of several stop ids, e.g. a chat
    template's end-of-turn marker and EOS), 0 after it."""
    stops = torch.tensor([eos_id] if isinstance(eos_id, int) else list(eos_id), dtype=responses.dtype)
    is_eos = torch.isin(responses, stops).long()
    after_eos = (is_eos.cumsum(dim=1) - is_eos) > 0
    return (~after_eos).float()


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    return (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)


def sequence_batch(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, responses: torch.Tensor,
                   eos_id: int | Sequence[int], pad_id: int) -> dict[str, Any]:
    """Full-sequence tensors of a rollout from left-padded prompts and generated responses."""
    rmask = response_mask(responses, eos_id)
    responses = torch.where(rmask.bool(), responses, torch.full_like(responses, pad_id))
    att = torch.cat([prompt_mask.long(), rmask.long()], dim=1)
    return {"input_ids": torch.cat([prompt_ids, responses], dim=1), "attention_mask": att,
            "position_ids": position_ids(att), "response_mask": rmask, "prompt_len": prompt_ids.shape[1]}


def response_slice(per_position: torch.Tensor, prompt_len: int, shifted: bool) -> torch.Tensor:
    """The response part of per-position outputs.

    ``shifted``: the input is over ``input_ids[:, 1:]`` (token log-probs, [B, L-1]); the response
    tokens are then columns ``P-1 ...``. Unshifted per-position outputs ([B, L], e.g. values) are read
    at the position *before* each response token, which is the same columns ``P-1 ... L-2``.
    """
    if shifted:
        return per_position[:, prompt_len - 1:]
    return per_position[:, prompt_len - 1:-1]


def pad_right(tensors: Sequence[torch.Tensor], value: float = 0) -> torch.Tensor:
    """Concatenate [b_i, T_i] tensors along the batch, right-padding to the longest T."""
    T = max(t.shape[1] for t in tensors)
    out = [torch.nn.functional.pad(t, (0, T - t.shape[1]), value=value) for t in tensors]
    return torch.cat(out, dim=0)


def make_experience(batch: dict[str, Any], logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
                    values: torch.Tensor, scores: torch.Tensor, *, beta: float, kl_kind: str, gamma: float,
                    lam: float, whiten: bool) -> tuple[dict[str, Any], dict[str, float]]:
    """Per-token KL folded into the rewards, GAE, whitening; returns the experience and its stats.

    ``scores`` are the (normalised) sequence scores placed on each row's last response token.
    """
    mask = batch["response_mask"]
    kl = kl_penalty(logprobs, ref_logprobs, kl_kind) * mask
    rewards = shape_rewards(scores, kl, mask, beta)
    advantages, returns = compute_gae(rewards, values, mask, gamma, lam)
    if whiten:
        advantages = whiten_advantages(advantages, mask)
    exp = dict(batch)
    exp.update(old_logprobs=logprobs, ref_logprobs=ref_logprobs, old_values=values, advantages=advantages,
               returns=returns, rewards=rewards)
    # sequence-level KL (sum over tokens of the k1 log-ratio), the quantity the adaptive controller tracks
    seq_kl = ((logprobs - ref_logprobs) * mask).sum(dim=1)
    stats = {
        "kl": float(seq_kl.mean()),
        "kl_penalty_per_token": float(masked_mean(kl, mask)),
        "explained_variance": explained_variance(values, returns, mask),
        "value_mean": float(masked_mean(values, mask)),
        "return_mean": float(masked_mean(returns, mask)),
        "advantage_mean_raw": float(masked_mean(advantages, mask)),
        "response_length": float(mask.sum(dim=1).mean()),
    }
    return exp, stats


def minibatch_indices(n: int, minibatch_size: int, seed: int, step: int, epoch: int) -> list[np.ndarray]:
    """A seeded permutation of the rollout rows, cut into minibatches (same on resume)."""
    perm = np.random.default_rng([seed, step, epoch]).permutation(n)
    return [perm[i:i + minibatch_size] for i in range(0, n, minibatch_size)]


def select(exp: dict[str, Any], idx: np.ndarray, keys: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Rows ``idx`` of every tensor in ``exp`` (non-tensors are passed through)."""
    t = torch.as_tensor(idx, dtype=torch.long)
    out: dict[str, Any] = {}
    for k, v in exp.items():
        if keys is not None and k not in keys and not isinstance(v, int):
            continue
        out[k] = v.index_select(0, t) if isinstance(v, torch.Tensor) else v
    return out


def shard_rows(batch: dict[str, Any], num_shards: int) -> list[dict[str, Any]]:
    """Split the rows of a batch into ``num_shards`` contiguous, near-equal parts."""
    n = next(v.shape[0] for v in batch.values() if isinstance(v, torch.Tensor))
    bounds = np.linspace(0, n, num_shards + 1).astype(int)
    return [select(batch, np.arange(bounds[i], bounds[i + 1])) for i in range(num_shards)]

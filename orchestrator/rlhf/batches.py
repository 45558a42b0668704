"""Token batches of the RL roles: left-padded prompts for generation and per-token log-probabilities.

Training batches of records (right-padded or packed) are built by :mod:`orchestrator.training.records`.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch


def left_pad_prompts(tok: Any, prompts: Sequence[str], max_prompt_tokens: int) -> dict[str, torch.Tensor]:
    """Left-padded prompt ids for generation (every row ends at the same position)."""
    enc = [tok(p, add_special_tokens=False)["input_ids"][-max_prompt_tokens:] for p in prompts]
    T = max(len(e) for e in enc)
    ids = torch.full((len(enc), T), tok.pad_token_id, dtype=torch.long)
    att = torch.zeros((len(enc), T), dtype=torch.long)
    for i, e in enumerate(enc):
        ids[i, T - len(e):] = torch.tensor(e)
        att[i, T - len(e):] = 1
    return {"input_ids": ids, "attention_mask": att}


def token_logprobs(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """``[B, T-1]`` log-probabilities of ``input_ids[:, 1:]`` under a causal LM."""
    from orchestrator.rlhf.losses import logprobs_from_logits

    kwargs = {"attention_mask": batch["attention_mask"]}
    if "position_ids" in batch:
        kwargs["position_ids"] = batch["position_ids"]
    logits = model(input_ids=batch["input_ids"], use_cache=False, **kwargs).logits
    return logprobs_from_logits(logits[:, :-1], batch["input_ids"][:, 1:])

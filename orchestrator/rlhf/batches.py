"""Token batches for post-training from sft / preference / prompts records.

Conventions: no BOS (as in pretraining), ``ids = prompt + response + [eos]``; ``loss_mask[t] = 1``
where token ``t`` is a response token (EOS included), so the loss of a causal LM is taken on
``logits[:, :-1]`` against ``ids[:, 1:]`` with ``loss_mask[:, 1:]``. Batches are right-padded
(training, scoring) or left-padded (generation). Packing puts several examples in one row with a
block-diagonal causal mask and per-example position ids, so no token attends across examples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch


@dataclass(frozen=True)
class Encoded:
    ids: list[int]
    loss_mask: list[int]


def encode_pair(tok: Any, prompt: str, response: str, seq_len: int, max_prompt_tokens: int) -> Encoded:
    """Prompt (left-truncated to ``max_prompt_tokens``) + response + EOS, cut to ``seq_len``."""
    p = tok(prompt, add_special_tokens=False)["input_ids"][-max_prompt_tokens:]
    r = tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    ids = (p + r)[:seq_len]
    mask = ([0] * len(p) + [1] * len(r))[:seq_len]
    return Encoded(ids, mask)


def pad_batch(items: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``loss_mask`` ([B, T], T = longest row)."""
    T = max(len(e.ids) for e in items)
    ids = torch.full((len(items), T), pad_id, dtype=torch.long)
    att = torch.zeros((len(items), T), dtype=torch.long)
    loss = torch.zeros((len(items), T), dtype=torch.float32)
    for i, e in enumerate(items):
        n = len(e.ids)
        ids[i, :n] = torch.tensor(e.ids)
        att[i, :n] = 1
        loss[i, :n] = torch.tensor(e.loss_mask, dtype=torch.float32)
    return {"input_ids": ids, "attention_mask": att, "loss_mask": loss}


def pack_batch(items: Sequence[Encoded], seq_len: int, pad_id: int) -> dict[str, torch.Tensor]:
    """Greedy packing of examples into rows of ``seq_len`` tokens.

    Returns ``input_ids``/``loss_mask`` [R, seq_len], ``position_ids`` restarting at 0 for every
    example, and a boolean ``attention_mask`` [R, 1, seq_len, seq_len] that is causal inside each
    example and False across examples and on padding (transformers accepts such 4-D masks).
    """
    rows: list[list[Encoded]] = [[]]
    used = [0]
    for e in items:
        if used[-1] + len(e.ids) > seq_len:
            rows.append([])
            used.append(0)
        rows[-1].append(e)
        used[-1] += len(e.ids)
    R = len(rows)
    ids = torch.full((R, seq_len), pad_id, dtype=torch.long)
    loss = torch.zeros((R, seq_len), dtype=torch.float32)
    pos = torch.zeros((R, seq_len), dtype=torch.long)
    seg = torch.full((R, seq_len), -1, dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for s, e in enumerate(row):
            n = len(e.ids)
            ids[r, at:at + n] = torch.tensor(e.ids)
            loss[r, at:at + n] = torch.tensor(e.loss_mask, dtype=torch.float32)
            pos[r, at:at + n] = torch.arange(n)
            seg[r, at:at + n] = s
            at += n
    causal = torch.tril(torch.ones(seq_len, seq_len, dtype=torch.bool))
    same = (seg[:, :, None] == seg[:, None, :]) & (seg[:, :, None] >= 0)
    att = (same & causal)[:, None]
    # padding rows attend to themselves only, so softmax never sees an all-masked row
    att = att | torch.eye(seq_len, dtype=torch.bool)[None, None]
    return {"input_ids": ids, "attention_mask": att, "position_ids": pos, "loss_mask": loss}


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


def preference_batch(tok: Any, records: Sequence[dict], seq_len: int, max_prompt_tokens: int) -> dict[str, torch.Tensor]:
    """Chosen rows first, then rejected rows (2B right-padded rows)."""
    chosen = [encode_pair(tok, r["prompt"], r["chosen"], seq_len, max_prompt_tokens) for r in records]
    rejected = [encode_pair(tok, r["prompt"], r["rejected"], seq_len, max_prompt_tokens) for r in records]
    return pad_batch(chosen + rejected, tok.pad_token_id)

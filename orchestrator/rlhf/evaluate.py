"""Held-out evaluation of a policy directory on the demo task: sample responses, score them exactly."""

from __future__ import annotations

import importlib
import statistics
from typing import Sequence

import torch

from orchestrator.rlhf.batches import left_pad_prompts


@torch.no_grad()
def sample_responses(model_dir: str, prompts: Sequence[str], *, seed: int, max_new_tokens: int = 12,
                     temperature: float = 1.0, batch_size: int = 64) -> list[str]:
    """Responses (EOS and padding stripped) sampled like PPO's rollouts (temperature, no top-k)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    torch.manual_seed(seed)
    out: list[str] = []
    for i in range(0, len(prompts), batch_size):
        pb = left_pad_prompts(tok, prompts[i:i + batch_size], 48)
        seqs = model.generate(**pb, do_sample=True, temperature=temperature, top_k=0, max_new_tokens=max_new_tokens,
                              eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        for row in seqs[:, pb["input_ids"].shape[1]:].tolist():
            if tok.eos_token_id in row:
                row = row[:row.index(tok.eos_token_id)]
            out.append(tok.decode([t for t in row if t != tok.pad_token_id]))
    return out


def mean_reward(model_dir: str, prompts: Sequence[str], *, seed: int = 0,
                reward_fn: str = "orchestrator.data.task:score_texts", **kwargs) -> float:
    """Mean rule-based reward of sampled responses to ``prompts``."""
    module, _, func = reward_fn.partition(":")
    fn = getattr(importlib.import_module(module), func)
    responses = sample_responses(model_dir, prompts, seed=seed, **kwargs)
    return statistics.fmean(fn(list(prompts), responses))

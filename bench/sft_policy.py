"""The tiny SFT'd policy both RL benches start from (plain torch, seconds to a minute on CPU): a demo-config
Llama trained on a generated task's demonstrations, saved with its tokenizer. Used by ``ppo_vs_trl.py`` and
``grpo_vs_trl.py`` so both sides of each bench start from the same weights."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Optional


def train_sft_policy(root: Path, steps: int, task: str = "fruit", seed: Optional[int] = None) -> tuple[Any, Any, str]:
    """(model, tokenizer, saved policy dir) after ``steps`` AdamW steps of 16 demonstrations of ``task``
    (``seed``: torch seed before the model is built; None keeps torch's current state)."""
    import torch
    from transformers import AutoTokenizer

    from orchestrator.config.model import ModelConfig
    from orchestrator.data.shards import read_records
    from orchestrator.data.task import ensure_task_dataset
    from orchestrator.models.build import build_causal_lm
    from orchestrator.rlhf import batches
    from orchestrator.training import records as rec

    d = ensure_task_dataset(root, "sft", 2000, 0, task=task)
    tok = AutoTokenizer.from_pretrained(d / "tokenizer")
    ids = {"pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id, "bos_token_id": tok.bos_token_id}
    if seed is not None:
        torch.manual_seed(seed)
    model = build_causal_lm(ModelConfig(), 0, special_ids=ids)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    data = read_records(d)
    for step in range(steps):
        b = rec.pad_batch([rec.encode_pair(tok, r["prompt"], r["response"], 64, 48)
                           for r in random.Random(step).sample(data, 16)], tok.pad_token_id)
        m = b["loss_mask"][:, 1:]
        loss = -(batches.token_logprobs(model, b) * m).sum() / m.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    policy = root / "policy"
    model.save_pretrained(policy)
    tok.save_pretrained(policy)
    return model, tok, str(policy)

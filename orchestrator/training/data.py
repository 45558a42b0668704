"""Batch sources over a :class:`~orchestrator.data.shards.PackedDataset` for the shared training loop.

Public API:
    PackedBatchSource(dataset, sampler, seq_len)          (a loop.BatchSource)
    make_pretrain_source(dataset, cfg, plan, dp_rank) -> (PackedBatchSource, eval_indices)
    eval_micro_batches(dataset, eval_indices, seq_len, micro_batch, dp_rank, dp_size, num_batches)
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch

from orchestrator.training.sampler import StepSampler, split_heldout


def blocks_to_batch(dataset: Any, indices: np.ndarray, seq_len: int) -> dict[str, torch.Tensor]:
    """Stack blocks (truncated to ``seq_len``) into ``input_ids``/``labels`` (labels = inputs; the model shifts)."""
    ids = torch.from_numpy(np.stack([dataset[int(i)][:seq_len] for i in indices]).astype(np.int64))
    return {"input_ids": ids, "labels": ids}


class PackedBatchSource:
    """Fixed-length causal-LM micro-batches in :class:`StepSampler` order."""

    def __init__(self, dataset: Any, sampler: StepSampler, seq_len: int) -> None:
        self.dataset = dataset
        self.sampler = sampler
        self.seq_len = seq_len

    def next_step(self) -> list[dict[str, torch.Tensor]]:
        return [blocks_to_batch(self.dataset, idx, self.seq_len) for idx in self.sampler.next_step()]

    def num_tokens(self, micro_batch: dict[str, torch.Tensor]) -> int:
        return int(micro_batch["input_ids"].numel())

    def state_dict(self) -> dict[str, Any]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)


def make_pretrain_source(dataset: Any, cfg: Any, plan: Any, dp_rank: int) -> tuple[PackedBatchSource, np.ndarray]:
    """The training source of data-parallel rank ``dp_rank`` and the held-out block indices."""
    train_idx, eval_idx = split_heldout(len(dataset), cfg.data.eval_fraction, dataset.digest)
    sampler = StepSampler(indices=train_idx, global_batch=plan.global_batch_size, micro_batch=plan.micro_batch_size,
                          dp_rank=dp_rank, dp_size=plan.dp_size, seed=cfg.trainer.seed, shuffle=cfg.data.shuffle)
    return PackedBatchSource(dataset, sampler, cfg.model.seq_len), eval_idx


def eval_block_indices(eval_indices: np.ndarray, micro_batch: int, dp_size: int, num_batches: int) -> np.ndarray:
    """The held-out blocks one evaluation reads over all ranks: ``num_batches`` micro-batches per rank
    (fewer when the split is smaller). Exported-model checks read exactly these."""
    return np.asarray(eval_indices[: num_batches * micro_batch * dp_size])


def eval_micro_batches(dataset: Any, eval_indices: np.ndarray, seq_len: int, micro_batch: int, dp_rank: int,
                       dp_size: int, num_batches: int) -> Iterator[dict[str, torch.Tensor]]:
    """This rank's share (every ``dp_size``-th block) of :func:`eval_block_indices`, in micro-batches."""
    mine = eval_block_indices(eval_indices, micro_batch, dp_size, num_batches)[dp_rank::dp_size]
    for i in range(0, len(mine), micro_batch):
        yield blocks_to_batch(dataset, mine[i:i + micro_batch], seq_len)

"""Deterministic, rank-aware, resumable sampling of packed blocks (pure numpy; no torch, no Ray).

One optimizer step consumes ``global_batch`` blocks in a fixed global order (a seeded permutation per
epoch); data-parallel rank ``r`` takes the ``r``-th contiguous share and splits it into micro-batches.
The position (blocks consumed) is the only state, so it is saved in the checkpoint and a resumed run
sees exactly the blocks an uninterrupted run would have seen. Tensor/pipeline-parallel ranks of the
same data-parallel rank receive the same blocks (sharding is over dp ranks only).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np


def split_heldout(num_blocks: int, eval_fraction: float, digest: str) -> tuple[np.ndarray, np.ndarray]:
    """(train_indices, eval_indices): a fixed pseudo-random ``eval_fraction`` of the blocks (at least one
    when the fraction is > 0), chosen from the dataset digest so every job reading this dataset agrees."""
    seed = int(hashlib.sha256(digest.encode()).hexdigest()[:16], 16)
    perm = np.random.default_rng(seed).permutation(num_blocks)
    num_eval = 0 if eval_fraction <= 0 else max(1, int(round(num_blocks * eval_fraction)))
    num_eval = min(num_eval, num_blocks - 1)
    return np.sort(perm[num_eval:]), np.sort(perm[:num_eval])


@dataclass
class StepSampler:
    """Which blocks each rank reads at each optimizer step.

    Args:
        indices: the block indices to sample from (the training split).
        global_batch: blocks per optimizer step over all dp ranks (``trainer.global_batch_size``).
        micro_batch: blocks per forward pass on one rank.
        dp_rank: this worker's data-parallel rank.
        dp_size: number of data-parallel ranks.
        seed: shuffle seed (``trainer.seed``); the epoch is mixed in.
        shuffle: permute each epoch (else the natural order).
    """

    indices: np.ndarray
    global_batch: int
    micro_batch: int
    dp_rank: int
    dp_size: int
    seed: int
    shuffle: bool = True
    consumed: int = 0
    """Blocks consumed globally so far (the state saved in checkpoints)."""

    def __post_init__(self) -> None:
        assert self.global_batch % (self.micro_batch * self.dp_size) == 0, "plan guarantees divisibility"
        assert len(self.indices) > 0, "empty training split"
        self._perm_cache: dict[int, np.ndarray] = {}

    def epoch_order(self, epoch: int) -> np.ndarray:
        if epoch not in self._perm_cache:
            idx = np.asarray(self.indices)
            if self.shuffle:
                idx = idx[np.random.default_rng([self.seed, epoch]).permutation(len(idx))]
            self._perm_cache = {epoch: idx}  # keep one epoch only
        return self._perm_cache[epoch]

    def global_batch_at(self, consumed: int) -> np.ndarray:
        """The ``global_batch`` block indices starting at global position ``consumed`` (wrapping epochs)."""
        n = len(self.indices)
        out, pos = [], consumed
        while len(out) < self.global_batch:
            epoch, off = divmod(pos, n)
            take = min(self.global_batch - len(out), n - off)
            out.extend(self.epoch_order(epoch)[off:off + take].tolist())
            pos += take
        return np.asarray(out, dtype=np.int64)

    def next_step(self) -> list[np.ndarray]:
        """This rank's micro-batches (arrays of block indices) for the next step; advances the position."""
        batch = self.global_batch_at(self.consumed)
        self.consumed += self.global_batch
        share = len(batch) // self.dp_size
        mine = batch[self.dp_rank * share:(self.dp_rank + 1) * share]
        return [mine[i:i + self.micro_batch] for i in range(0, len(mine), self.micro_batch)]

    @property
    def epoch(self) -> int:
        return self.consumed // len(self.indices)

    def state_dict(self) -> dict[str, int]:
        return {"consumed": int(self.consumed), "epoch": int(self.epoch)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.consumed = int(state["consumed"])

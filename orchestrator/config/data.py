"""``data`` group for training jobs: which packed dataset (written by data_prep) to read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from orchestrator.config.base import Frozen
from orchestrator.config.errors import require


@dataclass
class TrainDataConfig(Frozen):
    path: Optional[str] = None
    """Directory written by ``data_prep`` (``manifest.json``, shards, ``tokenizer/``). null = build
    the project's small demo dataset under ``<workspace>/demo_data`` (smoke runs only)."""
    eval_fraction: float = 0.05
    """Fraction of packed blocks held out for evaluation (chosen deterministically from the digest)."""
    shuffle: bool = True
    """Shuffle training blocks each epoch with a seed derived from trainer.seed and the epoch."""

    def __post_init__(self) -> None:
        require(0.0 <= self.eval_fraction < 0.5, "data.eval_fraction", f"{self.eval_fraction} not in [0, 0.5)",
                "use e.g. data.eval_fraction=0.05")

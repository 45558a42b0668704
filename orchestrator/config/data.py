"""``data`` group for training jobs: which packed dataset (written by data_prep) to read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from orchestrator.config.base import Frozen
from orchestrator.config.errors import require

DEMO_TASKS = ("fruit", "arithmetic")
"""The project's generated verifiable tasks (``orchestrator.data.task`` and ``orchestrator.data.arithmetic``)."""


@dataclass
class TrainDataConfig(Frozen):
    path: Optional[str] = None
    """Directory written by ``data_prep`` (``manifest.json``, shards, ``tokenizer/``). null = build
    the project's small demo dataset under ``<workspace>/demo_data`` (smoke runs only)."""
    task: str = "fruit"
    """The generated task of a records job (sft, dpo, reward_model, ppo, grpo) when ``path`` is null:
    ``fruit`` ("list 3 fruit:", graded share of on-topic words; the default, which the demo pipeline and
    the reward-model/DPO/PPO tests are tuned on) or ``arithmetic`` ("compute 3+4:", operands 0-4, exact match on the
    final number, the RLVR task; pair it with ``reward.functions`` ``...reward_functions:arithmetic_reward``)."""
    eval_fraction: float = 0.05
    """Fraction of packed blocks held out for evaluation (chosen deterministically from the digest)."""
    shuffle: bool = True
    """Shuffle training blocks each epoch with a seed derived from trainer.seed and the epoch."""

    def __post_init__(self) -> None:
        require(0.0 <= self.eval_fraction < 0.5, "data.eval_fraction", f"{self.eval_fraction} not in [0, 0.5)",
                "use e.g. data.eval_fraction=0.05")
        require(self.task in DEMO_TASKS, "data.task", f"unknown generated task {self.task!r}",
                f"use one of {', '.join(DEMO_TASKS)}")

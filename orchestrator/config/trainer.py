"""``trainer`` and ``optim`` groups: the training loop and the optimizer/schedule."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from orchestrator.config.base import Frozen
from orchestrator.config.errors import require

SCHEDULES = ("cosine", "linear", "constant")


@dataclass
class TrainerConfig(Frozen):
    max_steps: int = 20
    """Optimizer steps to train for (one step = one global batch)."""
    global_batch_size: int = 8
    """Sequences per optimizer step over all data-parallel ranks; must be divisible by
    parallel.micro_batch_size * dp (the remainder is gradient accumulation)."""
    lr: float = 3e-3
    """Peak learning rate after warmup (tiny models tolerate high LRs; use ~3e-4 for 1B+)."""
    seed: int = 1234
    """Seed for init, sampling and dropout; together with the checkpoint it makes resume exact."""
    save_every: int = 10
    """Write a checkpoint every N steps (and at the end); 0 = only at the end."""
    keep_checkpoints: int = 2
    """Keep the newest N committed checkpoints; older ones are deleted after a new one commits."""
    max_failures: int = 2
    """Times the worker group is restarted (resuming from the latest committed checkpoint) after a rank
    fails or its process or node is lost inside one job."""
    log_every: int = 1
    """Log metrics every N steps."""
    eval_every: int = 0
    """Evaluate held-out loss/perplexity every N steps; 0 = only at the end."""
    eval_batches: int = 4
    """Micro-batches per evaluation."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value; 0 disables clipping."""
    peak_tflops_per_worker: float = 0.0
    """Peak dense TFLOP/s of one worker's device for MFU; 0 = guess (989 for H100 bf16, 1 on CPU)."""
    export: bool = True
    """Write a Hugging Face directory (safetensors + config + tokenizer) at the end and log it."""
    allow_config_change: bool = False
    """Resume even when the checkpoint's config hash differs in shape-breaking ways (expert use)."""
    strict_schedule: bool = False
    """Refuse to resume when ``trainer.max_steps``, ``trainer.lr`` or the ``optim`` schedule/warmup differ
    from the checkpoint's (default: warn once with the LR the next step takes and the one the
    uninterrupted run would have had, then continue on the new schedule)."""
    fail_at_step: Optional[int] = None
    """Fault injection for tests: rank 1 exits hard at this step, once (a marker file remembers)."""

    def __post_init__(self) -> None:
        for name in ("max_steps", "global_batch_size", "keep_checkpoints", "log_every", "eval_batches"):
            require(getattr(self, name) >= 1, f"trainer.{name}", "must be >= 1", "set a value >= 1")
        for name in ("save_every", "max_failures", "eval_every"):
            require(getattr(self, name) >= 0, f"trainer.{name}", "must be >= 0", "set a value >= 0")
        require(self.lr > 0, "trainer.lr", f"{self.lr} is not positive", "use e.g. trainer.lr=3e-4")
        require(self.grad_clip >= 0, "trainer.grad_clip", "must be >= 0", "use 1.0, or 0 to disable")


@dataclass
class OptimConfig(Frozen):
    name: str = "adamw"
    """Optimizer; AdamW (decoupled weight decay) is the only one supported."""
    beta1: float = 0.9
    """Adam first-moment decay."""
    beta2: float = 0.95
    """Adam second-moment decay (0.95 is the LLM-pretraining standard, more stable than 0.999)."""
    eps: float = 1e-8
    """Adam epsilon."""
    weight_decay: float = 0.1
    """Decoupled weight decay (not applied to biases and norm weights)."""
    warmup_steps: int = 2
    """Linear warmup steps from 0 to trainer.lr."""
    schedule: str = "cosine"
    """Decay after warmup: ``cosine`` (default), ``linear`` or ``constant``."""
    min_lr_ratio: float = 0.1
    """Final LR as a fraction of the peak for cosine/linear decay."""

    def __post_init__(self) -> None:
        require(self.name == "adamw", "optim.name", f"unknown optimizer {self.name!r}", "use optim.name=adamw")
        require(self.schedule in SCHEDULES, "optim.schedule", f"unknown schedule {self.schedule!r}",
                f"use one of {', '.join(SCHEDULES)}")
        require(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "optim.beta1", "betas must be in [0, 1)",
                "use e.g. beta1=0.9 beta2=0.95")
        require(self.warmup_steps >= 0, "optim.warmup_steps", "must be >= 0", "set 0 or more")
        require(0 <= self.min_lr_ratio <= 1, "optim.min_lr_ratio", "must be in [0, 1]", "use e.g. 0.1")
        require(self.weight_decay >= 0, "optim.weight_decay", "must be >= 0", "use e.g. 0.1")

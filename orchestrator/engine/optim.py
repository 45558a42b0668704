"""AdamW with decoupled weight decay and the warmup + decay LR schedule (pure math in ``lr_factor``)."""

from __future__ import annotations

import functools
import math

import torch

from orchestrator.config.trainer import OptimConfig


def lr_factor(step: int, *, warmup_steps: int, max_steps: int, schedule: str, min_lr_ratio: float) -> float:
    """Multiplier of the peak LR for optimizer step ``step`` (0-based).

    Linear warmup ``(step+1)/warmup`` reaches the peak at the last warmup step; then ``cosine`` or
    ``linear`` decay to ``min_lr_ratio`` at ``max_steps - 1``, or ``constant``.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    decay_steps = max(1, max_steps - 1 - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    if schedule == "linear":
        shape = 1.0 - progress
    else:
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_lr_ratio + (1.0 - min_lr_ratio) * shape


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: matrices get weight decay; biases, norms (1-D params) and nothing else do not.
    Tied weights appear once."""
    decay, no_decay, seen = [], [], set()
    for _, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: torch.nn.Module, optim: OptimConfig, lr: float) -> torch.optim.Optimizer:
    """Torch AdamW over :func:`param_groups` (``foreach`` off: same kernel order on every run)."""
    return torch.optim.AdamW(param_groups(model, optim.weight_decay), lr=lr, betas=(optim.beta1, optim.beta2),
                             eps=optim.eps, foreach=False)


def make_scheduler(optimizer: torch.optim.Optimizer, optim: OptimConfig, max_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR over :func:`lr_factor`; its state (``last_epoch``) goes into the DeepSpeed checkpoint."""
    fn = functools.partial(lr_factor, warmup_steps=optim.warmup_steps, max_steps=max_steps,
                           schedule=optim.schedule, min_lr_ratio=optim.min_lr_ratio)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)

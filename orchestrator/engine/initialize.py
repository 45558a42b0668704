"""``deepspeed.initialize`` wrapper: one call from (model, typed config, plan) to a ready engine.

Public API:
    init_engine(model, cfg, plan, *, max_steps=None, lr=None) -> deepspeed.DeepSpeedEngine
    setup_accelerator_env(use_gpu) -> None
"""

from __future__ import annotations

import os
from typing import Any, Optional

import torch

from orchestrator.config.jobs import TrainJobConfig
from orchestrator.config.plan import TrainPlan
from orchestrator.engine.ds_config import build_ds_config
from orchestrator.engine.optim import make_optimizer, make_scheduler


def setup_accelerator_env(use_gpu: bool) -> None:
    """DeepSpeed picks its accelerator at first import: force ``cpu`` for CPU runs."""
    if not use_gpu:
        os.environ["DS_ACCELERATOR"] = "cpu"


def init_engine(model: torch.nn.Module, cfg: TrainJobConfig, plan: TrainPlan, *, max_steps: Optional[int] = None,
                lr: Optional[float] = None, ds_overrides: Optional[dict[str, Any]] = None) -> Any:
    """Wrap ``model`` in a DeepSpeed engine with AdamW and the configured LR schedule.

    ``torch.distributed`` must already be initialised (Ray Train's TorchConfig does it in workers; a
    single process can call ``deepspeed.init_distributed(dist_backend="gloo")``).

    Args:
        model: the module to train (fp32; DeepSpeed casts for bf16/fp16 and partitions for ZeRO-3).
        cfg: the job config (``parallel``, ``optim``, ``trainer``).
        plan: its :class:`TrainPlan` (batch sizes, precision).
        max_steps: schedule length (default ``trainer.max_steps``).
        lr: peak LR (default ``trainer.lr``).
        ds_overrides: extra top-level keys merged into the DeepSpeed config (e.g. for benchmarks).
    Returns:
        the engine; ``engine.optimizer`` and ``engine.lr_scheduler`` are set.
    """
    setup_accelerator_env(cfg.cluster.use_gpu)
    import deepspeed

    if cfg.parallel.activation_checkpointing and hasattr(model, "gradient_checkpointing_enable"):
        # Recompute each block in backward (HF's hook; DeepSpeed's own API is for hand-written models).
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    ds_config = build_ds_config(cfg, plan)
    ds_config.update(ds_overrides or {})
    steps = max_steps or cfg.trainer.max_steps
    mpu = None
    if plan.tp_size > 1:  # AutoTP: DeepSpeed's (data, tensor) groups, so ZeRO and batch sizes see dp only
        from orchestrator.engine.tp import init_tp_groups

        mpu = init_tp_groups(plan.tp_size, cfg.cluster.use_gpu)
    if plan.pp_size > 1:  # this rank's pipeline stage only (the engine becomes a PipelineEngine)
        from orchestrator.engine.pipe import to_pipeline_module

        deepspeed.init_distributed(dist_backend="nccl" if cfg.cluster.use_gpu else "gloo", dist_init_required=False)
        model = to_pipeline_module(model, cfg, plan)
    optimizer = make_optimizer(model, cfg.optim, lr or cfg.trainer.lr)
    engine, _, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, config=ds_config, mpu=mpu,
        # A callable gets DeepSpeed's wrapped optimizer, so LR changes reach ZeRO's flat groups.
        lr_scheduler=lambda opt: make_scheduler(opt, cfg.optim, steps),
        dist_init_required=False,
    )
    return engine

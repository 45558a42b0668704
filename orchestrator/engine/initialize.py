"""``deepspeed.initialize`` wrapper: one call from (model, typed config, plan) to a ready engine.

Public API:
    init_engine(model, cfg, plan, *, max_steps=None, lr=None) -> deepspeed.DeepSpeedEngine
    setup_accelerator_env(use_gpu) -> None
    prepare_deepspeed(use_gpu) -> None      (before anything calls ``deepspeed.init_distributed``)
"""

from __future__ import annotations

import os
from typing import Any, Optional

import torch

from orchestrator.config.jobs import TrainJobConfig
from orchestrator.config.plan import TrainPlan
from orchestrator.engine.ds_config import build_ds_config
from orchestrator.engine.optim import make_optimizer, make_scheduler


# DeepSpeed ops that a CPU training run never calls but that DeepSpeed would JIT-compile anyway.
_UNUSED_CPU_OPS = ("deepspeed_shm_comm", "deepspeed_ccl_comm")


def setup_accelerator_env(use_gpu: bool) -> None:
    """DeepSpeed picks its accelerator at first import: force ``cpu`` for CPU runs."""
    if not use_gpu:
        os.environ["DS_ACCELERATOR"] = "cpu"


class _LazyCompatibleOps(dict):
    """``deepspeed.ops.__compatible_ops__`` with our entries set and the others probed on first lookup
    (DeepSpeed's own probe checks every op builder, compiler subprocesses included, to answer one key)."""

    def __missing__(self, name: str) -> bool:
        from deepspeed.ops.op_builder.all_ops import ALL_OPS
        from deepspeed.ops.op_builder.builder import probe_is_compatible

        builder = ALL_OPS.get(name)
        self[name] = bool(builder is not None and probe_is_compatible(builder))
        return self[name]

    def get(self, name: str, default: object = None) -> object:  # dict.get bypasses __missing__
        return self[name]


def prepare_deepspeed(use_gpu: bool) -> None:
    """Set the accelerator and, on CPU, keep DeepSpeed from JIT-compiling its shared-memory all-reduce op.

    ``deepspeed.init_distributed`` builds ``deepspeed_shm_comm`` with the system C++ compiler in every
    process (about a minute per build on a 2-core machine; the ``torch_extensions`` cache is rebuilt
    whenever another process's build command differs, and processes queue on its lock). The op only
    serves ``inference_all_reduce`` (AutoTP layers in inference mode), for which DeepSpeed falls back to
    ``torch.distributed.all_reduce`` (gloo) when the op is unavailable: the same sum, so training, eval
    and exports are unaffected. Idempotent; call before the first ``deepspeed.init_distributed``.
    """
    setup_accelerator_env(use_gpu)
    if use_gpu:
        return
    import deepspeed.ops

    table = vars(deepspeed.ops).get("__compatible_ops__")
    if not isinstance(table, dict):  # not probed yet: install ours instead of DeepSpeed's full probe
        table = _LazyCompatibleOps()
        deepspeed.ops.__compatible_ops__ = table
    for name in _UNUSED_CPU_OPS:
        table[name] = False


def init_engine(model: torch.nn.Module, cfg: TrainJobConfig, plan: TrainPlan, *, max_steps: Optional[int] = None,
                lr: Optional[float] = None, ds_overrides: Optional[dict[str, Any]] = None) -> Any:
    """Wrap ``model`` in a DeepSpeed engine with AdamW and the configured LR schedule.

    ``torch.distributed`` must already be initialised (the worker group does it in workers; a
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
    prepare_deepspeed(cfg.cluster.use_gpu)
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

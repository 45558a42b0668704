"""DeepSpeed config dict from the typed config and its plan (pure: no torch, no DeepSpeed import).

The builder is the one place that maps ``parallel.*``/``trainer.*`` to DeepSpeed keys. Tensor
parallelism (AutoTP, ``"tensor_parallel": {"autotp_size": tp}``) is a key here; its process groups and the
pipeline's ``PipelineModule`` are set up in :mod:`orchestrator.engine.initialize` (see :mod:`.tp`, :mod:`.pipe`).
"""

from __future__ import annotations

from typing import Any

from orchestrator.config.jobs import TrainJobConfig
from orchestrator.config.plan import TrainPlan

# Large enough that DeepSpeed never prints its own step lines (we log through MLflow).
_STEPS_PER_PRINT = 10**9


def build_ds_config(cfg: TrainJobConfig, plan: TrainPlan) -> dict[str, Any]:
    """The ``config`` dict passed to ``deepspeed.initialize``.

    Batch sizes follow the plan: ``train_batch_size = micro_batch * grad_accum * dp``. Precision is the
    plan's (fp32 on CPU so that CPU runs are bit-exact; bf16 on GPU by default). The optimizer and LR
    schedule are torch objects handed to ``initialize`` (see :mod:`orchestrator.engine.optim`), so the
    config carries no ``optimizer``/``scheduler`` section.
    """
    p = cfg.parallel
    ds: dict[str, Any] = {
        "train_batch_size": plan.micro_batch_size * plan.grad_accum_steps * plan.dp_size,
        "train_micro_batch_size_per_gpu": plan.micro_batch_size,
        "gradient_accumulation_steps": plan.grad_accum_steps,
        "gradient_clipping": cfg.trainer.grad_clip,
        "steps_per_print": _STEPS_PER_PRINT,
        "wall_clock_breakdown": False,
        "zero_optimization": zero_section(p.zero_stage, p.offload),
        # A torch optimizer with CPU offload is fine (DeepSpeedCPUAdam needs a compiled op).
        "zero_force_ds_cpu_optimizer": False,
    }
    if plan.precision == "bf16":
        ds["bf16"] = {"enabled": True}
    elif plan.precision == "fp16":
        ds["fp16"] = {"enabled": True, "initial_scale_power": 16, "loss_scale_window": 1000}
    if plan.tp_size > 1:  # AutoTP training (process groups: orchestrator.engine.tp)
        ds["tensor_parallel"] = {"autotp_size": plan.tp_size}
        if cfg.kind != "pretrain":
            # Objectives that read the logits (SFT token log-probs) need them whole: keep the (tied) output
            # head replicated instead of DeepSpeed's vocabulary-parallel head with its own loss.
            ds["tensor_parallel"]["vocab_parallel_lm_head"] = False
    return ds


def zero_section(stage: int, offload: str) -> dict[str, Any]:
    """``zero_optimization`` for a stage and an offload target."""
    z: dict[str, Any] = {"stage": stage}
    if stage >= 1:
        z["contiguous_gradients"] = True
        z["overlap_comm"] = False  # keep CPU runs deterministic; on GPU the gain is small at these sizes
    if stage == 3:
        # Gather every parameter for the HF export (save_16bit_model) and keep small params resident.
        z["stage3_gather_16bit_weights_on_model_save"] = True
    if offload == "cpu" and stage >= 1:
        z["offload_optimizer"] = {"device": "cpu", "pin_memory": False}
        if stage == 3:
            z["offload_param"] = {"device": "cpu", "pin_memory": False}
    return z

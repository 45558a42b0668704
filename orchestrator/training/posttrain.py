"""``sft``, ``reward_model`` (and ``dpo``) jobs, driver side: upstream model and data, resume decision,
MLflow run with lineage, the Ray Train worker group (same as pretraining), export.

Entries: ``run_sft(cfg)``, ``run_reward_model(cfg)``; ``orchestrator.rlhf.jobs:run_dpo`` uses
:func:`run_posttrain` too.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any

from orchestrator.config.jobs import RewardModelConfig, SFTConfig, TrainJobConfig
from orchestrator.config.plan import make_train_plan

log = logging.getLogger(__name__)


def run_sft(cfg: SFTConfig) -> dict[str, Any]:
    """Supervised fine-tuning on prompt/response records, loss on response tokens only.

    Returns ``run_id``, ``output_dir``, ``export_dir``, ``losses`` per step, ``eval`` (held-out
    response-token loss/perplexity, before and after) and ``model_version``.
    """
    return run_posttrain(cfg)


def run_reward_model(cfg: RewardModelConfig) -> dict[str, Any]:
    """Bradley-Terry reward model on preference pairs. ``eval`` holds held-out accuracy before/after
    training and the reward mean/std stored with the model for PPO's normaliser."""
    return run_posttrain(cfg)


def check_sft(cfg: TrainJobConfig) -> None:
    """SFT option combinations refused before Ray starts (called by ``config.validate`` too)."""
    from orchestrator.config.errors import ConfigError

    if cfg.kind != "sft":
        return
    if cfg.sft.packing and cfg.model.arch != "llama":  # type: ignore[attr-defined]
        raise ConfigError("sft.packing", f"packing needs per-example attention masks, supported here for llama only "
                          f"(model.arch={cfg.model.arch})", "set sft.packing=false or model.arch=llama")
    if cfg.sft.lora_rank and cfg.parallel.zero_stage == 3:  # type: ignore[attr-defined]
        raise ConfigError("sft.lora_rank", "LoRA merge-on-export needs whole weights, not ZeRO-3 partitions",
                          "use parallel.zero_stage<=2 with LoRA (the frozen base has no optimizer states anyway)")


def run_posttrain(cfg: TrainJobConfig) -> dict[str, Any]:
    """Shared driver of sft / reward_model / dpo (see :mod:`orchestrator.training.posttrain_worker`)."""
    from orchestrator.config.errors import ConfigError
    from orchestrator.engine.checkpoint import latest_committed
    from orchestrator.engine.resume import resolve_resume, shape_fingerprint
    from orchestrator.rlhf import common
    from orchestrator.runtime.ray_runtime import ray_session
    from orchestrator.tracking import config_hash
    from orchestrator.training.driver import fit_worker_group, refuse_unsupported_parallelism
    from orchestrator.training.loop import read_steps
    from orchestrator.training.posttrain_worker import DATA_FORMAT, EVAL_FILE, PostTrainArgs, posttrain_worker

    refuse_unsupported_parallelism(cfg, cfg.kind)
    check_sft(cfg)
    if cfg.kind == "sft" and cfg.sft.lora_rank:
        try:
            import peft  # noqa: F401
        except ImportError as exc:
            raise ConfigError("sft.lora_rank", "LoRA needs the peft package", "pip install -e '.[lora]'") from exc
    out = Path(cfg.output_dir)
    ckpt_root = out / "checkpoints"
    resume_dir = resolve_resume(cfg, ckpt_root)
    model_dir = common.resolve_model(cfg.model.pretrained, cfg, "model.pretrained")
    reference = getattr(getattr(cfg, "dpo", None), "reference", None)
    reference_dir = common.resolve_model(reference, cfg, "dpo.reference") if reference else model_dir
    data = common.dataset_dir(cfg, DATA_FORMAT[cfg.kind], model_dir if common.has_tokenizer(model_dir) else None)
    if model_dir is None:
        log.warning("model.pretrained is null: %s starts from a randomly initialised model (smoke run only)", cfg.kind)
    out.mkdir(parents=True, exist_ok=True)
    tok_dir = out / "tokenizer"  # tokenizer files only (an upstream model dir also holds weights)
    tok_dir.mkdir(exist_ok=True)
    common.copy_tokenizer(common.pick_tokenizer(model_dir, data), tok_dir)
    if resume_dir is None:
        (out / "steps.jsonl").unlink(missing_ok=True)
        (out / EVAL_FILE).unlink(missing_ok=True)
    plan = make_train_plan(cfg)
    export_dir = str(out / "export") if cfg.trainer.export else None
    tags = common.lineage_tags(cfg, model=cfg.model.pretrained, reference=reference, dataset=str(data))
    t0 = time.time()
    with ray_session(cfg.cluster), common.job_tracker(cfg) as tracker:
        tracker.set_tags(tags)
        tracker.log_dataset(data, "training")
        args = PostTrainArgs(cfg=cfg, plan=plan, dataset_dir=str(data), model_dir=model_dir,
                             reference_dir=reference_dir if cfg.kind == "dpo" else None, tokenizer_dir=str(tok_dir),
                             resume_dir=str(resume_dir) if resume_dir else None, run_id=tracker.run_id,
                             extra_state={"config_hash": config_hash(cfg), "shape": shape_fingerprint(cfg),
                                          "mlflow_run_id": tracker.run_id, "dataset_dir": str(data)},
                             export_dir=export_dir, attempt_id=uuid.uuid4().hex)
        try:
            fit_worker_group(cfg, posttrain_worker, {"args": args})
        finally:
            (ckpt_root / f".started_{args.attempt_id}").unlink(missing_ok=True)
        version = common.finish_export(tracker, cfg, Path(export_dir), tags) if export_dir else None
        run_id = tracker.run_id
    steps = read_steps(str(out))
    eval_metrics = json.loads((out / EVAL_FILE).read_text()) if (out / EVAL_FILE).exists() else {}
    ckpt = latest_committed(ckpt_root)
    return {"run_id": run_id, "output_dir": str(out), "export_dir": export_dir,
            "checkpoint_dir": str(ckpt) if ckpt else None, "resumed_from": str(resume_dir) if resume_dir else None,
            "losses": {k: s["loss"] for k, s in steps.items()}, "eval": eval_metrics, "model_version": version,
            "model_name": cfg.run_name if version else None,
            "final_loss": steps[max(steps)]["loss"] if steps else None, "wall_s": time.time() - t0,
            **{k: v for k, v in eval_metrics.items() if k.startswith("eval_")}}

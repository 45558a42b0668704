"""``pretrain`` job (driver side): data, resume decision, MLflow run, Ray Train worker group, export.

Entry: ``run_pretrain(cfg)`` (``orchestrator run pretrain``, ``jobs/pretrain.py``).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any, Optional

from orchestrator.config.jobs import PretrainConfig, TrainJobConfig
from orchestrator.config.plan import make_train_plan

log = logging.getLogger(__name__)


def resolve_dataset(cfg: TrainJobConfig) -> Path:
    """``data.path``, or the demo dataset built for ``model.seq_len``/``model.vocab_size`` when null."""
    if cfg.data.path is not None:
        return Path(cfg.data.path).expanduser().resolve()
    from orchestrator.data.demo import ensure_demo_dataset

    return ensure_demo_dataset(cfg.workspace, seq_len=cfg.model.seq_len, vocab_size=cfg.model.vocab_size, seed=0)


def run_pretrain(cfg: PretrainConfig) -> dict[str, Any]:
    """Pretrain ``cfg.model`` on ``cfg.cluster.num_workers`` Ray Train workers with DeepSpeed.

    Returns:
        ``run_id`` (MLflow, None without tracking), ``output_dir``, ``checkpoint_dir`` (newest committed),
        ``export_dir`` (or None), ``losses`` ({step: loss} of every step), ``eval`` ({eval_loss, eval_ppl}),
        ``resumed_from`` and ``tokens_per_s`` (mean over steps after the first).
    Raises:
        ConfigError: unsupported parallelism or an incompatible checkpoint to resume (before Ray starts).
    """
    from orchestrator.engine.checkpoint import latest_committed
    from orchestrator.engine.resume import resolve_resume, shape_fingerprint
    from orchestrator.runtime.ray_runtime import ray_session
    from orchestrator.tracking import config_hash
    from orchestrator.training.driver import fit_worker_group, refuse_unsupported_parallelism
    from orchestrator.training.loop import read_steps
    from orchestrator.training.pretrain_worker import EVAL_FILE, WorkerArgs, pretrain_worker

    refuse_unsupported_parallelism(cfg, "pretrain")
    out = Path(cfg.output_dir)
    ckpt_root = out / "checkpoints"
    resume_dir = resolve_resume(cfg, ckpt_root)  # ConfigError before any resource is asked for
    dataset_dir = resolve_dataset(cfg)
    plan = make_train_plan(cfg)
    out.mkdir(parents=True, exist_ok=True)
    if resume_dir is None:  # a fresh run: forget step records of an earlier attempt without checkpoints
        (out / "steps.jsonl").unlink(missing_ok=True)
    export_dir = str(out / "export") if cfg.trainer.export else None
    t0 = time.time()
    with ray_session(cfg.cluster):
        tracker = _start_tracking(cfg)
        run_id = tracker.run_id if tracker else None
        try:
            if tracker:
                tracker.log_dataset(dataset_dir, context="training")
                tracker.log_params({f"plan.{k}": v for k, v in plan.as_dict().items()})
                tracker.set_tags({"topology": f"dp{plan.dp_size}xtp{plan.tp_size}xpp{plan.pp_size}"})
            args = WorkerArgs(cfg=cfg, plan=plan, dataset_dir=str(dataset_dir),
                              resume_dir=str(resume_dir) if resume_dir else None, run_id=run_id,
                              extra_state={"config_hash": config_hash(cfg), "shape": shape_fingerprint(cfg),
                                           "mlflow_run_id": run_id, "dataset_dir": str(dataset_dir)},
                              export_dir=export_dir, attempt_id=uuid.uuid4().hex,
                              pretrained_dir=_local_pretrained(cfg, out))
            try:
                fit_worker_group(cfg, pretrain_worker, {"args": args})
            finally:
                (ckpt_root / f".started_{args.attempt_id}").unlink(missing_ok=True)
            model_version = None
            if tracker and export_dir:
                model_version = tracker.register_model(export_dir, name=cfg.run_name)
        except BaseException:
            if tracker:
                tracker.__exit__(*__import__("sys").exc_info())
            raise
        if tracker:
            tracker.finish("FINISHED")
    steps = read_steps(str(out))
    eval_metrics = json.loads((out / EVAL_FILE).read_text()) if (out / EVAL_FILE).exists() else {}
    tps = [s["tokens_per_s"] for k, s in steps.items() if k > 1]
    ckpt = latest_committed(ckpt_root)
    if steps:
        last = max(steps)
        print(f"pretrain finished: step {last}, loss {steps[last]['loss']:.4f}, eval ppl "
              f"{eval_metrics.get('eval_ppl', float('nan')):.2f}; checkpoint {ckpt}; export {export_dir}; "
              f"MLflow run {run_id}", flush=True)
    return {
        "run_id": run_id, "output_dir": str(out), "checkpoint_dir": str(ckpt) if ckpt else None,
        "export_dir": export_dir, "losses": {k: s["loss"] for k, s in steps.items()}, "eval": eval_metrics,
        "resumed_from": str(resume_dir) if resume_dir else None, "model_version": model_version,
        "tokens_per_s": sum(tps) / len(tps) if tps else None, "wall_s": time.time() - t0,
    }


def _local_pretrained(cfg: TrainJobConfig, out: Path) -> Optional[str]:
    """Download an MLflow ``model.pretrained`` once on the driver (workers share the run directory)."""
    if not cfg.model.pretrained:
        return None
    from orchestrator.models.build import resolve_pretrained

    return resolve_pretrained(cfg.model.pretrained, dst_dir=str(out / "pretrained"), tracking_uri=cfg.tracking.uri)


def _start_tracking(cfg: TrainJobConfig) -> Optional[Any]:
    if not cfg.tracking.enabled:
        return None
    from orchestrator.tracking import JobTracker

    return JobTracker.start(cfg)

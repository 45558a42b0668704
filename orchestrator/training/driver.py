"""Driver side of every DeepSpeed training job (pretrain, sft, reward_model, dpo): inputs, resume
decision, the MLflow run with lineage, the worker group (:mod:`orchestrator.runtime.rank_group` on warm
hosts: the only Ray plumbing), registration.

Public API:
    run_training(cfg, task) -> result dict      (a kind's runner: ``run_training(cfg, SFTTask())``)
    fit_worker_group(cfg, train_fn, train_loop_config) -> list of per-rank results
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Optional

from orchestrator.config.jobs import TrainJobConfig, checkpoint_root, checkpoint_uri
from orchestrator.config.plan import make_train_plan
from orchestrator.core.console import StepProgress, say
from orchestrator.core.files import copy_tokenizer, has_tokenizer
from orchestrator.core.timing import Phases, record_startup, startup_line
from orchestrator.engine.checkpoint import latest_committed, read_trainer_state
from orchestrator.engine.resume import resolve_resume, schedule_fingerprint, shape_fingerprint
from orchestrator.runtime.preload import import_in_background
from orchestrator.runtime.ray_runtime import ray_session
from orchestrator.runtime.worker_group import driver_node
from orchestrator.tracking import config_hash, job_run, lineage_tags
from orchestrator.tracking.relay import relay_metrics
from orchestrator.training.inputs import (PACKED, dataset_dir, ensure_job_chat_template, pick_tokenizer,
                                          resolve_model)
from orchestrator.training.metrics import read_steps
from orchestrator.training.task import TrainTask
from orchestrator.training.worker import EVAL_FILE, STARTUP_FILE, WorkerArgs, train_worker

log = logging.getLogger(__name__)


WORKER_PRELOAD = ("torch", "transformers", "transformers.models.llama.modeling_llama", "deepspeed",
                  "orchestrator.training.worker", "orchestrator.training.loop", "orchestrator.engine.initialize",
                  "orchestrator.engine.checkpoint", "orchestrator.models.build", "orchestrator.data.shards")
"""Imported by each worker process as soon as it starts, while the driver opens the MLflow run."""


def group_spec(cluster: Any, model_parallel: int = 1) -> Any:
    """The worker group layout of a job's ``cluster`` settings (``model_parallel``: tp*pp ranks that share a
    placement-group bundle, hence a node)."""
    from orchestrator.runtime.ray_runtime import worker_env
    from orchestrator.runtime.worker_group import GroupSpec

    return GroupSpec(num_workers=cluster.num_workers, cpus_per_worker=cluster.cpus_per_worker,
                     use_gpu=cluster.use_gpu, placement=cluster.placement,
                     env=tuple(sorted(worker_env(cluster).items())), model_parallel=model_parallel)


def fit_worker_group(cfg: TrainJobConfig, train_fn: Callable[[dict[str, Any]], Any],
                     train_loop_config: dict[str, Any]) -> list[Any]:
    """Run ``train_fn`` on ``cluster.num_workers`` ranks (gloo on CPU / NCCL on GPU) and wait for it;
    returns each rank's result. A failure restarts the whole group up to ``trainer.max_failures`` times
    (the workers resume from the newest committed checkpoint), with fewer data-parallel ranks when
    ``cluster.min_workers`` allows it and the full group does not fit (:mod:`orchestrator.training.elastic`).
    Must run inside :func:`orchestrator.runtime.ray_runtime.ray_session`; the processes stay warm for the
    next job.

    Raises:
        WorkerGroupError: the group failed more than ``max_failures`` times (names the rank and the cause).
    """
    from orchestrator.runtime.rank_group import run_on_group
    from orchestrator.training.elastic import elastic_restarts

    spec = group_spec(cfg.cluster, cfg.parallel.tensor_parallel * cfg.parallel.pipeline_parallel)
    return run_on_group(spec, train_fn, train_loop_config, max_failures=cfg.trainer.max_failures,
                        preload=WORKER_PRELOAD, what=f"{cfg.kind} worker group", elastic=elastic_restarts(cfg))


def run_training(cfg: TrainJobConfig, task: TrainTask) -> dict[str, Any]:
    """Train ``cfg.model`` with ``task`` on ``cluster.num_workers`` workers with DeepSpeed.

    Returns:
        ``run_id`` (MLflow, None without tracking), ``output_dir``, ``checkpoint_dir`` (newest committed),
        ``export_dir``, ``model_version``/``model_name`` (registry), ``losses`` ({step: loss}), ``eval``
        (eval.json: final and initial held-out metrics, also flattened as ``eval_*``), ``final_loss``,
        ``resumed_from``, ``tokens_per_s`` (mean over steps after the first) and ``wall_s``.
    Raises:
        ConfigError: an incompatible checkpoint to resume or unusable inputs (before the workers start).
    """
    t0 = time.time()
    phases = Phases()
    import_in_background("ray")  # ~1 s of imports that the Ray start would otherwise begin with
    with phases.phase("inputs"):
        prepared = _prepare(cfg, task)
    if prepared["resume_dir"]:
        step = read_trainer_state(prepared["resume_dir"])["step"]
        say(f"{cfg.kind}: resumed from {prepared['resume_dir']} at step {step}")
    with contextlib.ExitStack() as stack:
        import_in_background("mlflow.store.tracking.sqlalchemy_store")  # while Ray starts
        with phases.phase("ray_start"):
            stack.enter_context(ray_session(cfg.cluster, preload=WORKER_PRELOAD))
            from orchestrator.runtime.rank_group import prepare

            prepare(group_spec(cfg.cluster), WORKER_PRELOAD)  # workers start and import while MLflow opens
        with phases.phase("tracking_start"):
            tracker = stack.enter_context(job_run(cfg, resume_run_id=prepared["resume_run_id"]))
        version = _train(cfg, task, prepared, tracker, phases)
        run_id = tracker.run_id
        startup = _startup_metrics(Path(cfg.output_dir), phases)
        tracker.log_metrics(startup, 0)
    say(startup_line(cfg.kind, startup))
    return {**_result(cfg, Path(cfg.output_dir), run_id, prepared["export_dir"], version, prepared["resume_dir"],
                      time.time() - t0), "startup": startup}


def _prepare(cfg: TrainJobConfig, task: TrainTask) -> dict[str, Any]:
    """Driver-side inputs, before Ray: resume decision, upstream models, dataset, tokenizer, plan."""
    out = Path(cfg.output_dir)
    uri = checkpoint_uri(cfg)
    if uri:  # URI storage: the store's newest committed checkpoint into this node's mirror, then as usual
        from orchestrator.engine.storage import RemoteCheckpoints

        RemoteCheckpoints(uri).download_latest(checkpoint_root(cfg))
    resume_dir = resolve_resume(cfg, checkpoint_root(cfg))
    model_dir = resolve_model(cfg.model.pretrained, cfg, "model.pretrained")
    upstream_uris = {key: _config_value(cfg, key) for key in task.upstream_keys}
    upstream = {key: resolve_model(uri, cfg, key) for key, uri in upstream_uris.items()}
    packed = task.data_format == PACKED
    data = dataset_dir(cfg, task.data_format, None if packed else _tokenizer_of(model_dir))
    if model_dir is None and not packed:
        log.warning("model.pretrained is null: %s starts from a randomly initialised model (smoke run only)", cfg.kind)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = pick_tokenizer(model_dir, data, required=not packed)
    tok_dir = None
    if tokenizer:  # tokenizer files only (an upstream model dir also holds weights)
        tok_dir = str(out / "tokenizer")
        copy_tokenizer(tokenizer, tok_dir)
        if not packed:
            ensure_job_chat_template(tok_dir, data, task.data_format)
    if resume_dir is None:  # a fresh run: forget records of an earlier attempt without checkpoints
        (out / "steps.jsonl").unlink(missing_ok=True)
        (out / EVAL_FILE).unlink(missing_ok=True)
    plan = make_train_plan(cfg)
    export_dir = str(out / "export") if cfg.trainer.export else None
    tags = lineage_tags(model=cfg.model.pretrained, **{k.split(".")[-1]: v for k, v in upstream_uris.items()},
                        dataset=str(data))
    resume_run_id = read_trainer_state(resume_dir).get("extra", {}).get("mlflow_run_id") if resume_dir else None
    return {"resume_dir": resume_dir, "resume_run_id": resume_run_id, "model_dir": model_dir, "upstream": upstream, "data": data,
            "tok_dir": tok_dir, "plan": plan, "export_dir": export_dir, "tags": tags}


def _train(cfg: TrainJobConfig, task: TrainTask, p: dict[str, Any], tracker: Any, phases: Phases) -> Optional[str]:
    """Inside Ray and the MLflow run: the worker group, then registration; returns the model version."""
    plan, data, resume_dir, export_dir = p["plan"], p["data"], p["resume_dir"], p["export_dir"]
    with phases.phase("tracking_setup"):
        tracker.set_tags({**p["tags"], "topology": f"dp{plan.dp_size}xtp{plan.tp_size}xpp{plan.pp_size}"})
        tracker.log_dataset(data, "training")
        tracker.log_params({**{f"plan.{k}": v for k, v in plan.as_dict().items() if k != "placement"},
                            "plan.placement": plan.placement["strategy"]})
    args = WorkerArgs(cfg=cfg, plan=plan, task=task, dataset_dir=str(data), model_dir=p["model_dir"],
                      tokenizer_dir=p["tok_dir"], upstream=p["upstream"],
                      resume_dir=_for_workers(cfg, resume_dir), run_id=tracker.run_id,
                      extra_state={"config_hash": config_hash(cfg), "shape": shape_fingerprint(cfg),
                                   "schedule": schedule_fingerprint(cfg), "mlflow_run_id": tracker.run_id,
                                   "dataset_dir": str(data)},
                      export_dir=export_dir, attempt_id=uuid.uuid4().hex,
                      relay_node=driver_node() if tracker.run_id else None)
    (Path(cfg.output_dir) / STARTUP_FILE).unlink(missing_ok=True)
    phases.add("fit_start_time", time.time())  # a timestamp, replaced by worker_group below
    try:
        with phases.phase("fit"), StepProgress(cfg.kind, Path(cfg.output_dir) / "steps.jsonl", cfg.trainer.max_steps), \
                (relay_metrics(cfg.output_dir, tracker.client, tracker.run_id) if args.relay_node
                 else contextlib.nullcontext()):
            fit_worker_group(cfg, train_worker, {"args": args})
    finally:
        (checkpoint_root(cfg) / f".started_{args.attempt_id}").unlink(missing_ok=True)
    with phases.phase("register"):
        return tracker.register_model(export_dir, cfg.run_name, p["tags"]) if export_dir else None


def _for_workers(cfg: TrainJobConfig, resume_dir: Optional[Path]) -> Optional[str]:
    """The resume choice as the ranks can read it: with URI storage a checkpoint of the driver's local mirror
    is named by its URI on the store (every node has its own mirror; the ranks download from the store)."""
    if resume_dir is None:
        return None
    uri = checkpoint_uri(cfg)
    if uri and Path(resume_dir).parent == checkpoint_root(cfg):
        return f"{uri}/{Path(resume_dir).name}"
    return str(resume_dir)


def _startup_metrics(out: Path, phases: Phases) -> dict[str, float]:
    """The job's ``startup.*`` breakdown: driver phases, the worker group's start (placement, worker
    processes and their imports; near zero when a warm group is reused) and rank 0's own phases (imports, data, model, engine, first step, checkpoints,
    eval, export); also written to ``<output_dir>/startup.json``."""
    seconds = dict(phases.seconds)
    fit_start = seconds.pop("fit_start_time", None)
    fit = seconds.pop("fit", 0.0)
    worker = json.loads((out / STARTUP_FILE).read_text()) if (out / STARTUP_FILE).exists() else {}
    if worker.get("entry_time") and fit_start:
        seconds["worker_group"] = max(0.0, worker["entry_time"] - fit_start)
    seconds.update(worker.get("worker", {}))
    inside = seconds.get("worker_group", 0.0) + sum(worker.get("worker", {}).values())
    seconds["fit_teardown"] = max(0.0, fit - inside)
    return record_startup(out, seconds)


def _config_value(cfg: Any, key: str) -> Optional[str]:
    value: Any = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _tokenizer_of(model_dir: Optional[str]) -> Optional[str]:
    return model_dir if has_tokenizer(model_dir) else None


def _result(cfg: Any, out: Path, run_id: Optional[str], export_dir: Optional[str], version: Optional[str],
            resume_dir: Optional[Path], wall_s: float) -> dict[str, Any]:
    steps = read_steps(str(out))
    eval_metrics = json.loads((out / EVAL_FILE).read_text()) if (out / EVAL_FILE).exists() else {}
    ckpt = latest_committed(checkpoint_root(cfg))
    uri = checkpoint_uri(cfg)
    if uri:  # the durable copy is the store's (this node's mirror may not hold the last commit)
        from orchestrator.engine.storage import RemoteCheckpoints

        tag = RemoteCheckpoints(uri).latest()
        ckpt = f"{uri}/{tag}" if tag else None
    tps = [s["tokens_per_s"] for k, s in steps.items() if k > 1 and "tokens_per_s" in s]
    if steps:
        last = max(steps)
        ppl = f", eval ppl {eval_metrics['eval_ppl']:.2f}" if "eval_ppl" in eval_metrics else ""
        say(f"{cfg.kind} finished: step {last}, loss {steps[last]['loss']:.4f}{ppl}; checkpoint {ckpt}; "
            f"export {export_dir}; MLflow run {run_id}")
    return {"run_id": run_id, "output_dir": str(out), "export_dir": export_dir,
            "checkpoint_dir": str(ckpt) if ckpt else None, "resumed_from": str(resume_dir) if resume_dir else None,
            "losses": {k: s["loss"] for k, s in steps.items()}, "eval": eval_metrics, "model_version": version,
            "model_name": cfg.run_name if version else None,
            "final_loss": steps[max(steps)]["loss"] if steps else None,
            "tokens_per_s": sum(tps) / len(tps) if tps else None, "wall_s": wall_s,
            **{k: v for k, v in eval_metrics.items() if k.startswith("eval_")}}

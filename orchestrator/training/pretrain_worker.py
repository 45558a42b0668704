"""What each Ray Train worker of a ``pretrain`` job runs: model, engine, data, loop, eval, export.

``pretrain_worker(config)`` is the ``train_loop_per_worker`` (Ray side); :func:`run_worker` is the same
work against any :class:`~orchestrator.training.reporting.Reporter`, so it also runs in one plain process.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from orchestrator.config.jobs import TrainJobConfig
from orchestrator.config.plan import TrainPlan

log = logging.getLogger(__name__)

EVAL_FILE = "eval.json"


@dataclass
class WorkerArgs:
    """Everything the driver hands each worker (pickled into ``train_loop_config``)."""

    cfg: TrainJobConfig
    plan: TrainPlan
    dataset_dir: str
    resume_dir: Optional[str]
    """Committed checkpoint chosen by the driver (None = from scratch)."""
    run_id: Optional[str]
    """MLflow run that rank 0 logs into (None = tracking disabled)."""
    extra_state: dict[str, Any]
    """Client state stored in every checkpoint (config hash, shape fingerprint, run id, dataset digest)."""
    export_dir: Optional[str]
    """Where rank 0 writes the Hugging Face export at the end (None = no export)."""
    pretrained_dir: Optional[str] = None
    """``model.pretrained`` resolved to a local directory by the driver (MLflow URIs downloaded once)."""
    attempt_id: str = "0"
    """Unique per driver call: tells a first start from a restart inside the job (see ``select_resume``)."""


def pretrain_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point (``train_loop_per_worker``)."""
    from orchestrator.training.reporting import RayTrainReporter

    args: WorkerArgs = config["args"]
    run_worker(args, RayTrainReporter(in_place=not args.cfg.cluster.storage_path))


def run_worker(args: WorkerArgs, reporter: Any) -> dict[str, Any]:
    """Train, evaluate and export on this rank; returns the final eval metrics (all ranks)."""
    from orchestrator.engine.checkpoint import CheckpointManager
    from orchestrator.engine.export import export_hf
    from orchestrator.engine.initialize import init_engine, setup_accelerator_env

    cfg, plan = args.cfg, args.plan
    setup_accelerator_env(cfg.cluster.use_gpu)
    import torch

    from orchestrator.data.shards import PackedDataset
    from orchestrator.models.build import build_causal_lm, count_params
    from orchestrator.training.data import eval_micro_batches, make_pretrain_source
    from orchestrator.training.loop import LoopSpec, causal_lm_objective, evaluate, restore, select_resume, train_loop

    rank, world = reporter.world_rank, reporter.world_size
    out = Path(cfg.output_dir)
    dataset = PackedDataset(args.dataset_dir)
    m = dataset.manifest
    special = {"pad_token_id": m.get("pad_token_id"), "bos_token_id": m.get("bos_token_id"),
               "eos_token_id": m.get("eos_token_id")}
    model = build_causal_lm(cfg.model, cfg.trainer.seed, special_ids=special, local_pretrained_dir=args.pretrained_dir)
    num_params = count_params(model)
    engine = init_engine(model, cfg, plan)
    dp_rank = rank // (plan.tp_size * plan.pp_size)
    source, eval_idx = make_pretrain_source(dataset, cfg, plan, dp_rank)
    ckpts = CheckpointManager(out / "checkpoints", cfg.trainer.keep_checkpoints, rank, world)

    resume_dir = select_resume(args.resume_dir, ckpts.root, args.attempt_id, rank)
    state = restore(engine, source, ckpts, resume_dir) if resume_dir else None
    if resume_dir and rank == 0:
        log.warning("resumed from %s at step %d", resume_dir, state.step)

    sink = None
    if rank == 0 and args.run_id:
        from orchestrator.tracking import MetricsLogger

        # Large batches: the loop flushes at every checkpoint anyway (and backfills after a crash), so
        # between checkpoints the store is written rarely and training is not slowed by it.
        sink = MetricsLogger.from_run(cfg.tracking.uri, args.run_id, flush_every=2000, flush_interval_s=30.0)

    def eval_fn() -> dict[str, float]:
        batches = eval_micro_batches(dataset, eval_idx, cfg.model.seq_len, plan.micro_batch_size, dp_rank,
                                     plan.dp_size, cfg.trainer.eval_batches)
        return evaluate(engine, batches, causal_lm_objective, source.num_tokens)

    spec = LoopSpec.from_config(cfg, plan, str(out), num_params)
    state = train_loop(engine, source, causal_lm_objective, spec, checkpoints=ckpts, reporter=reporter,
                       state=state, sink=sink, extra_state=args.extra_state, eval_fn=eval_fn)
    final = eval_fn()
    if rank == 0:
        (out / EVAL_FILE).write_text(json.dumps({"step": state.step, **final}, indent=1))
        if sink is not None:
            sink.log(final, state.step)
            sink.close()
    if args.export_dir:
        tok = dataset.tokenizer_dir
        export_hf(engine, args.export_dir, rank=rank, tokenizer_dir=str(tok) if tok else None)
    reporter.report({"step": state.step, **final}, None)
    return final

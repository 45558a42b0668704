"""What every rank of a training job's worker group runs: data, model, engine, loop, eval, export.

One worker for pretrain, sft, reward_model and dpo. The data family comes from the task's
``data_format``: packed token blocks (pretraining) or tokenized records (sft / preference); the model,
objective, scoring and export come from the kind's :class:`~orchestrator.training.task.TrainTask`.
``train_worker(config)`` is the worker group's entry; :func:`run_worker` is the same work against any
:class:`~orchestrator.training.reporting.Reporter`, so it also runs in one plain process.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from orchestrator.core.timing import STARTUP_FILE
from orchestrator.training.inputs import PACKED
from orchestrator.training.task import TrainTask, WorkerContext

log = logging.getLogger(__name__)

EVAL_FILE = "eval.json"
PLACEMENT_FILE = "placement.json"
"""Where each rank ran: ``[{rank, node_id, hostname, local_dir}, ...]`` (rank 0 writes it for every rank)."""


@dataclass
class WorkerArgs:
    """Everything the driver hands each worker (pickled into ``train_loop_config``)."""

    cfg: Any
    plan: Any
    task: TrainTask
    dataset_dir: str
    model_dir: Optional[str]
    """Local HF dir of ``model.pretrained`` (None = random init from ``model.*``)."""
    tokenizer_dir: Optional[str]
    upstream: dict[str, Optional[str]]
    """Local dirs of the task's further upstream models, by config key."""
    resume_dir: Optional[str]
    """Committed checkpoint chosen by the driver (None = from scratch)."""
    run_id: Optional[str]
    """MLflow run that rank 0 logs into (None = tracking disabled)."""
    extra_state: dict[str, Any]
    """Client state stored in every checkpoint (config hash, shape fingerprint, run id, dataset)."""
    export_dir: Optional[str]
    """Where the Hugging Face export goes at the end (None = no export)."""
    attempt_id: str = "0"
    """Unique per driver call: tells a first start from a restart inside the job (see ``select_resume``)."""
    relay_node: Optional[str] = None
    """The driver's Ray node: rank 0 running there hands its metrics to the driver through the output dir
    (:mod:`orchestrator.tracking.relay`) instead of importing MLflow itself; None: rank 0 logs directly."""


def train_worker(config: dict[str, Any]) -> dict[str, Any]:
    """Entry point of every rank of the job's worker group; returns the final eval metrics."""
    from orchestrator.training.reporting import GroupReporter

    entry_time = time.time()
    args: WorkerArgs = config["args"]
    return run_worker(args, GroupReporter(), entry_time)


def _packed_data(args: WorkerArgs, ctx: WorkerContext) -> tuple[Any, list]:
    """Pretraining blocks: this rank's source and held-out micro-batches; fills the special token ids."""
    from orchestrator.data.shards import PackedDataset
    from orchestrator.training.data import eval_micro_batches, make_pretrain_source

    cfg, plan = args.cfg, args.plan
    dataset = PackedDataset(args.dataset_dir)
    ctx.special_ids = {k: dataset.manifest.get(k) for k in ("pad_token_id", "bos_token_id", "eos_token_id")}
    source, eval_idx = make_pretrain_source(dataset, cfg, plan, ctx.dp_rank)
    held_out = eval_micro_batches(dataset, eval_idx, cfg.model.seq_len, plan.micro_batch_size, ctx.dp_rank,
                                  plan.dp_size, cfg.trainer.eval_batches)
    return source, held_out


def _records_data(args: WorkerArgs, ctx: WorkerContext) -> tuple[Any, list]:
    """Records (sft / preference) tokenized once: this rank's source and held-out micro-batches."""
    from orchestrator.data.tokenizer import load_tokenizer
    from orchestrator.data.shards import load_manifest, read_records
    from orchestrator.training.records import encode_records, eval_batches, make_source

    cfg, plan, fmt = args.cfg, args.plan, args.task.data_format
    tok = load_tokenizer(args.tokenizer_dir)
    ctx.tokenizer = tok
    ctx.special_ids = {"pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id,
                       "eos_token_id": tok.eos_token_id}
    counts: dict[str, int] = {}
    ctx.encoded = encode_records(tok, read_records(args.dataset_dir), fmt, cfg.model.seq_len,
                                 args.task.max_prompt_tokens(cfg), args.task.train_on(cfg), counts)
    if counts["chat"] and ctx.rank == 0:
        log.info("%d conversations: %d dropped (too long for seq_len), %d oldest turns cut to fit",
                 counts["chat"], counts["dropped_too_long"], counts["turns_dropped"])
    packing = bool(getattr(getattr(cfg, "sft", None), "packing", False))
    source, eval_idx = make_source(ctx.encoded, load_manifest(args.dataset_dir)["digest"], cfg, plan, ctx.dp_rank,
                                   fmt, tok.pad_token_id, packing)
    held_out = eval_batches(ctx.encoded, eval_idx, fmt, tok.pad_token_id, cfg.model.seq_len, plan.micro_batch_size,
                            ctx.dp_rank, plan.dp_size)
    return source, held_out


def run_worker(args: WorkerArgs, reporter: Any, entry_time: Optional[float] = None) -> dict[str, Any]:
    """Train, evaluate and export on this rank; returns the final eval metrics (all ranks)."""
    from orchestrator.core.timing import Phases

    phases = Phases()
    with phases.phase("worker_imports"):
        from orchestrator.engine.initialize import init_engine, setup_accelerator_env

        cfg, plan, task = args.cfg, args.plan, args.task
        setup_accelerator_env(cfg.cluster.use_gpu)
        import torch

        from orchestrator.config.jobs import checkpoint_root, checkpoint_uri
        from orchestrator.engine.checkpoint import CheckpointManager
        from orchestrator.models.build import count_params
        from orchestrator.training.loop import LoopSpec, restore, select_resume, train_loop

    torch.use_deterministic_algorithms(not cfg.cluster.use_gpu, warn_only=True)
    # Deterministic mode also fills every torch.empty() with NaN (a debugging aid for code that reads memory it
    # never wrote). DeepSpeed's ZeRO-1/2 allocates its gradient bucket (reduce_bucket_size, 5e8 fp32 = 2 GB) with
    # torch.empty at every micro-step: the fill cost ~2.4 s per micro-step and rank on the 2-core machine (tiny
    # ZeRO-2 steps of 6-24 s instead of ~0.1 s) and made the whole 2 GB resident. The algorithms stay deterministic.
    torch.utils.deterministic.fill_uninitialized_memory = False
    rank, world = reporter.world_rank, reporter.world_size
    out = Path(cfg.output_dir)
    _record_placement(out / PLACEMENT_FILE, reporter)
    ctx = WorkerContext(cfg=cfg, plan=plan, rank=rank, dp_rank=rank // (plan.tp_size * plan.pp_size),
                        model_dir=args.model_dir, tokenizer_dir=args.tokenizer_dir, special_ids={},
                        upstream=args.upstream)  # ranks of one TP/PP group read the same examples
    with phases.phase("data"):
        source, held_out = (_packed_data if task.data_format == PACKED else _records_data)(args, ctx)
    with phases.phase("model_build"):
        model = task.build_model(ctx)
    num_params = count_params(model)
    with phases.phase("engine_init"):
        engine = init_engine(model, cfg, plan)
        objective = task.objective(ctx)

    def eval_fn() -> dict[str, float]:
        return task.evaluate(engine, held_out, objective, source)

    ckpts = CheckpointManager(checkpoint_root(cfg), cfg.trainer.keep_checkpoints, rank, world,
                              remote=checkpoint_uri(cfg), local_rank=reporter.local_rank)
    # Our own ``latest`` decides on a restart inside the job (Ray may still name an older checkpoint).
    with phases.phase("restore"):
        resume_dir = select_resume(args.resume_dir, ckpts.root, args.attempt_id, rank, ckpts.remote)
        resume_dir = ckpts.fetch(resume_dir)  # URI storage: every node downloads it into its local mirror
        state = restore(engine, source, ckpts, resume_dir) if resume_dir else None
    if resume_dir and rank == 0:
        log.warning("resumed from %s at step %d", resume_dir, state.step)
    sink = None
    if rank == 0 and args.run_id and args.relay_node == reporter.node_id:  # relay_node None: never equal
        from orchestrator.tracking.relay import RelaySink

        sink = RelaySink(out, args.run_id)  # the driver writes to MLflow (no ~3 s MLflow import here)
    elif rank == 0 and args.run_id:
        from orchestrator.tracking import MetricsLogger

        # Large batches: the loop flushes at every checkpoint anyway (and backfills after a crash), so
        # between checkpoints the store is written rarely and training is not slowed by it.
        sink = MetricsLogger.from_run(cfg.tracking.uri, args.run_id, flush_every=2000, flush_interval_s=30.0)
    with phases.phase("initial_eval"):
        initial = eval_fn() if state is None and task.initial_eval else {}
    spec = LoopSpec.from_config(cfg, plan, str(out), num_params)
    t_loop = time.perf_counter()
    def samples(step: int) -> None:  # rank 0: the kind's sample table, when due
        task.log_samples(engine, ctx, step, held_out, objective, sink)

    state = train_loop(engine, source, objective, spec, checkpoints=ckpts, reporter=reporter, state=state,
                       sink=sink, extra_state=args.extra_state, eval_fn=eval_fn, timings=phases.seconds,
                       on_step=samples if rank == 0 else None)
    phases.add("train_loop", time.perf_counter() - t_loop)
    with phases.phase("final_eval"):
        final = eval_fn()
        final.update(task.final_metrics(engine, source, ctx))
    if rank == 0:
        _write_eval(out / EVAL_FILE, state.step, initial, final)
        if sink is not None:
            sink.log(final, state.step)
            sink.close()
    if args.export_dir:
        with phases.phase("export"):
            task.export(engine, ctx, args.export_dir, final)
    if rank == 0:
        (out / STARTUP_FILE).write_text(json.dumps({"entry_time": entry_time, "worker": phases.seconds}, indent=1))
    reporter.report({"step": state.step, **final}, None)
    return final


def _record_placement(path: Path, reporter: Any) -> None:
    """Collective: rank 0 writes where every rank runs (node id, host, ``ORCHESTRATOR_LOCAL_DIR``)."""
    import os
    import socket

    import torch.distributed as dist

    me = {"rank": reporter.world_rank, "node_id": reporter.node_id, "hostname": socket.gethostname(),
          "local_dir": os.environ.get("ORCHESTRATOR_LOCAL_DIR")}
    every = [me]
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        every = [None] * dist.get_world_size()
        dist.all_gather_object(every, me)
    if reporter.world_rank == 0:
        from orchestrator.core.files import atomic_write_text

        atomic_write_text(path, json.dumps(every, indent=1))


def _write_eval(path: Path, step: int, initial: dict[str, float], final: dict[str, float]) -> None:
    """eval.json: the final metrics and the ``initial_*`` ones (kept from the first attempt on resume)."""
    prev = json.loads(path.read_text()) if path.exists() else {}
    before = {f"initial_{k}": v for k, v in initial.items()} or {k: v for k, v in prev.items()
                                                                if k.startswith("initial_")}
    path.write_text(json.dumps({"step": step, **before, **final}, indent=1))

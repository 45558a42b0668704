"""The per-worker training loop shared by pretrain, SFT and reward-model training.

A job plugs in two things and gets checkpointing, exact resume, fault injection, metrics and eval:

* a **batch source** (:class:`BatchSource`): ``next_step() -> list[dict[str, Tensor]]`` returns this
  rank's micro-batches for the next optimizer step (``plan.grad_accum_steps`` of them), ``num_tokens(mb)``
  counts the tokens of one micro-batch that count for throughput, and ``state_dict()`` /
  ``load_state_dict()`` hold its position (saved in every checkpoint);
* an **objective** (:data:`Objective`): ``objective(engine, micro_batch) -> (loss, metrics)`` runs the
  forward pass through the DeepSpeed engine and returns the scalar loss to backpropagate plus any
  floats to log (averaged over micro-batches and dp ranks). :func:`causal_lm_objective` is pretraining's;
  SFT uses the same with masked labels, a reward model returns its pairwise loss. The objectives and
  the model of each kind live in the kind's module (``orchestrator/kinds/<kind>.py``).

Usage (inside a worker; see :mod:`orchestrator.training.worker` for the full wiring)::

    engine = init_engine(model, cfg, plan)
    ckpts = CheckpointManager(out / "checkpoints", cfg.trainer.keep_checkpoints, rank, world)
    resume_dir = select_resume(driver_choice, ckpts.root, attempt_id, rank)  # first start vs Ray restart
    state = restore(engine, source, ckpts, resume_dir) if resume_dir else TrainState()
    state = train_loop(engine, source, objective, LoopSpec.from_config(cfg, plan, out), state=state,
                       checkpoints=ckpts, reporter=reporter, sink=metrics_logger_or_None,
                       extra_state={"config_hash": ..., "mlflow_run_id": ...})
    metrics = evaluate(engine, eval_batches, objective)   # {"eval_loss", "eval_ppl"}

Micro-batches are moved to ``engine.device`` by the loop (sources yield CPU tensors). Rank 0 writes
``<output_dir>/steps.jsonl`` and, at each checkpoint, flushes ``sink`` so that every step up to a
committed checkpoint is in MLflow; after a resume it backfills what a crash lost (:func:`backfill`).

Nothing here imports Ray: reporting goes through :class:`orchestrator.training.reporting.Reporter`.
"""

from __future__ import annotations

import math
import os
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Protocol

import torch
import torch.distributed as dist

from orchestrator.core.dist import barrier
from orchestrator.engine.checkpoint import CheckpointManager, step_tag
from orchestrator.training.metrics import StepLog, grad_norm, mfu, read_steps  # noqa: F401 (read_steps: public here too)

Objective = Callable[[Any, dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, float]]]


class BatchSource(Protocol):
    def next_step(self) -> list[dict[str, torch.Tensor]]: ...
    def num_tokens(self, micro_batch: dict[str, torch.Tensor]) -> int: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class MetricsSink(Protocol):
    """Rank 0's metric logger (``orchestrator.tracking.MetricsLogger``): idempotent per step."""

    def log(self, metrics: dict[str, float], step: int) -> None: ...
    def flush(self) -> Any: ...
    def close(self) -> None: ...


def causal_lm_objective(engine: Any, mb: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """Next-token cross-entropy (transformers shifts ``labels``; -100 labels are ignored)."""
    if getattr(engine, "pipeline_parallelism", False):  # forward only (eval): through every stage
        from orchestrator.engine.pipe import pipeline_eval_loss

        return pipeline_eval_loss(engine, mb), {}
    out = engine(input_ids=mb["input_ids"], attention_mask=mb.get("attention_mask"), labels=mb["labels"])
    return out.loss, {}


@dataclass
class LoopSpec:
    """Loop settings (from ``trainer.*`` and the plan)."""

    max_steps: int
    output_dir: str
    save_every: int = 0
    log_every: int = 1
    eval_every: int = 0
    fail_at_step: Optional[int] = None
    num_params: int = 0
    peak_tflops_per_worker: float = 1.0
    zero_stage: int = 0
    model_parallel: int = 1
    """tp * pp: ranks that see the same data (tokens are counted once per data-parallel rank)."""

    @classmethod
    def from_config(cls, cfg: Any, plan: Any, output_dir: str, num_params: int) -> "LoopSpec":
        t = cfg.trainer
        peak = t.peak_tflops_per_worker or (989.0 if cfg.cluster.use_gpu else 1.0)
        return cls(max_steps=t.max_steps, output_dir=output_dir, save_every=t.save_every, log_every=t.log_every,
                   eval_every=t.eval_every, fail_at_step=t.fail_at_step, num_params=num_params,
                   peak_tflops_per_worker=peak, zero_stage=cfg.parallel.zero_stage,
                   model_parallel=plan.tp_size * plan.pp_size)


@dataclass
class TrainState:
    step: int = 0
    """Optimizer steps completed."""
    tokens_seen: int = 0
    """Tokens consumed over all dp ranks."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Job-level client state carried through checkpoints (config hash, MLflow run id, ...)."""
    last_checkpoint: Optional[str] = None


def _comm_device() -> torch.device:
    """Where collective buffers must live: the current GPU for NCCL, else the CPU."""
    if dist.is_available() and dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (a CPU tensor in, a CPU tensor out)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        buf = values.to(_comm_device(), copy=True)
        dist.all_reduce(buf, op=dist.ReduceOp.SUM)
        return buf.cpu()
    return values


def to_device(mb: dict[str, Any], device: Any) -> dict[str, Any]:
    """Move a micro-batch's tensors to the engine's device (no-op on CPU)."""
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in mb.items()}


def maybe_inject_failure(spec: LoopSpec, step: int, rank: int, world_size: int) -> None:
    """Fault injection (``trainer.fail_at_step``): the last-but-zero rank 1 (or 0 alone) dies hard at the
    start of ``step`` once; a marker file in ``output_dir`` makes the restarted run go past it."""
    if spec.fail_at_step is None or step != spec.fail_at_step or rank != min(1, world_size - 1):
        return
    marker = Path(spec.output_dir) / f".fail_at_step_{step}.done"
    if marker.exists():
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("injected\n")
    print(f"[fault injection] rank {rank} exits hard at step {step}", flush=True)
    os._exit(1)


def memory_gib() -> float:
    """Peak device memory (GPU) or peak resident memory of this process (CPU), GiB."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def select_resume(driver_choice: Optional[str], checkpoint_root: str | Path, attempt_id: str, rank: int,
                  remote: Any = None) -> Optional[str]:
    """Collective: the checkpoint this worker group starts from.

    The first start of a job uses the driver's choice (``resume=auto|never|<path>``). A restart of the
    group inside the same job (``trainer.max_failures``) uses the newest committed checkpoint of this
    run (our ``latest``), so steps committed before the failure are not recomputed. ``attempt_id`` (one per
    driver call) tells the two apart through a marker file in the checkpoint root.
    """
    from orchestrator.engine.checkpoint import latest_committed

    marker = Path(checkpoint_root) / f".started_{attempt_id}"
    restart = _from_rank0(marker.exists())  # rank 0 decides: a node-local root (URI storage) may lack the marker
    if rank == 0 and not restart:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("started\n")
    choice = driver_choice
    if restart:
        if remote is not None:  # the store knows the newest commit; this node's mirror may not
            tag = _from_rank0(remote.latest() if rank == 0 else None)
            newest = Path(checkpoint_root) / tag if tag else None
        else:
            newest = latest_committed(Path(checkpoint_root))
        choice = str(newest) if newest else driver_choice
    barrier()
    return choice


def _from_rank0(value: Any) -> Any:
    """Collective: rank 0's ``value`` on every rank (itself in a single process)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def backfill(sink: MetricsSink, steplog: StepLog, upto_step: int, log_every: int = 1) -> None:
    """Re-log recorded steps ``<= upto_step`` (those a resumed run will not recompute). The sink skips
    points the store already has, so this only fills what a crash or an outage lost."""
    for step, rec in steplog.read().items():
        if step <= upto_step and step % log_every == 0:
            sink.log({k: v for k, v in rec.items() if k != "end_time_s"}, step)
    sink.flush()


def restore(engine: Any, source: BatchSource, checkpoints: CheckpointManager, ckpt_dir: str) -> TrainState:
    """Load a committed checkpoint into the engine and the batch source; returns the state to continue from."""
    st = checkpoints.load(engine, ckpt_dir)
    source.load_state_dict(st["sampler"])
    return TrainState(step=int(st["step"]), tokens_seen=int(st["tokens_seen"]), extra=dict(st.get("extra", {})),
                      last_checkpoint=str(ckpt_dir))


def train_loop(engine: Any, source: BatchSource, objective: Objective, spec: LoopSpec, *,
               checkpoints: CheckpointManager, reporter: Any, state: Optional[TrainState] = None,
               sink: Optional[MetricsSink] = None, extra_state: Optional[dict[str, Any]] = None,
               eval_fn: Optional[Callable[[], dict[str, float]]] = None,
               timings: Optional[dict[str, float]] = None,
               on_step: Optional[Callable[[int], None]] = None) -> TrainState:
    """Train from ``state.step`` to ``spec.max_steps``; checkpoint every ``save_every`` steps and at the end.

    Rank 0 appends each step's metrics to ``<output_dir>/steps.jsonl`` (the job's per-step record; a
    recovered step overwrites its earlier line when read) and to ``sink``. ``timings`` (when given)
    receives ``first_step`` and the summed ``checkpoint`` wall seconds; ``on_step(step)`` (when given) runs
    after each step's record on this rank. Returns the final state.
    """
    timings = {} if timings is None else timings
    state = state or TrainState()
    state.extra.update(extra_state or {})
    rank, world = reporter.world_rank, reporter.world_size
    steplog = StepLog(Path(spec.output_dir) / "steps.jsonl") if rank == 0 else None
    if sink is not None and rank == 0 and state.step > 0:
        backfill(sink, steplog, state.step, spec.log_every)
    engine.train()
    while state.step < spec.max_steps:
        step = state.step + 1
        maybe_inject_failure(spec, step, rank, world)
        t0 = time.perf_counter()
        micro = source.next_step()
        loss_sum: Any = 0.0
        extras: dict[str, float] = {}
        tokens = 0
        gnorm: Optional[float] = None
        lr = float(engine.get_lr()[0])  # the LR this step applies (the schedule advances in engine.step)
        piped = getattr(engine, "pipeline_parallelism", False)
        if piped:  # the pipeline engine runs all micro-batches (1F1B) and the optimizer step
            from orchestrator.engine.pipe import pipeline_train_step

            tokens = sum(source.num_tokens(mb) for mb in micro)
            loss_sum = pipeline_train_step(engine, micro) * len(micro)
        for i, mb in enumerate([] if piped else micro):
            tokens += source.num_tokens(mb)
            mb = to_device(mb, engine.device)
            loss, more = objective(engine, mb)
            engine.backward(loss)
            if spec.zero_stage == 0 and spec.model_parallel == 1 and i == len(micro) - 1 and not (engine.bfloat16_enabled() or engine.fp16_enabled()):
                gnorm = grad_norm(engine.module)  # DeepSpeed does not record it for ZeRO-0
            engine.step()
            loss_sum = loss_sum + loss.detach().double()  # stays on the device: one sync per step
            for k, v in more.items():
                extras[k] = extras.get(k, 0.0) + float(v) / len(micro)
        keys = sorted(extras)
        # One collective per step: sum [loss, extras..., tokens] over ranks, then average the means.
        packed = _all_reduce_sum(torch.tensor([float(loss_sum) / len(micro)] + [extras[k] for k in keys] + [tokens],
                                              dtype=torch.float64))
        total_tokens = int(packed[-1]) // spec.model_parallel  # tp/pp ranks of one dp rank share data
        packed = packed[:-1] / world
        dt = time.perf_counter() - t0
        timings.setdefault("first_step", dt)
        state.step, state.tokens_seen = step, state.tokens_seen + total_tokens
        if gnorm is None:
            g = engine.get_global_grad_norm()
            gnorm = float(g) if g is not None else float("nan")
        tps = total_tokens / dt if dt > 0 else 0.0
        metrics = {"loss": float(packed[0]), "lr": lr, "grad_norm": gnorm,
                   "tokens_per_s": tps, "step_time_s": dt, "tokens_seen": float(state.tokens_seen),
                   "mfu": mfu(spec.num_params, tps, spec.peak_tflops_per_worker, world), "memory_gib": memory_gib(),
                   **{k: float(packed[1 + j]) for j, k in enumerate(keys)}}
        if piped:  # per-stage timings (collective)
            from orchestrator.engine.pipe import pipeline_stage_metrics

            metrics.update(pipeline_stage_metrics(engine))
        if eval_fn is not None and spec.eval_every and step % spec.eval_every == 0 and step < spec.max_steps:
            metrics.update(eval_fn())
            engine.train()
        if rank == 0:
            steplog.append(step, {**metrics, "end_time_s": time.time()})  # wall clock for throughput benches
            if sink is not None and step % spec.log_every == 0:
                sink.log(metrics, step)
        if on_step is not None:  # after the step's record, before its checkpoint (e.g. a sample table)
            on_step(step)
        if step == spec.max_steps or (spec.save_every and step % spec.save_every == 0):
            if sink is not None and rank == 0:
                sink.flush()  # invariant: every step up to a committed checkpoint is in the tracking store
            t_ckpt = time.perf_counter()
            path = checkpoints.save(engine, step_tag(step), _client_state(state, source))
            timings["checkpoint"] = timings.get("checkpoint", 0.0) + time.perf_counter() - t_ckpt
            state.last_checkpoint = str(path)
            reporter.report({"step": step, "loss": metrics["loss"]}, str(path))
    return state


def _client_state(state: TrainState, source: BatchSource) -> dict[str, Any]:
    return {"step": state.step, "tokens_seen": state.tokens_seen, "sampler": source.state_dict(),
            "extra": state.extra, "world_size": int(os.environ.get("WORLD_SIZE", "1")) if not dist.is_initialized()
            else dist.get_world_size()}


@torch.no_grad()
def evaluate(engine: Any, micro_batches: Iterable[dict[str, torch.Tensor]], objective: Objective,
             num_tokens: Callable[[dict[str, torch.Tensor]], int]) -> dict[str, float]:
    """Token-weighted mean held-out loss over this rank's ``micro_batches``, reduced over ranks, and its
    perplexity ``exp(loss)``. Collective: every rank must call it (an empty shard contributes zero)."""
    engine.eval()
    acc = torch.zeros(2, dtype=torch.float64)
    for mb in micro_batches:
        n = num_tokens(mb)
        loss, _ = objective(engine, to_device(mb, engine.device))
        acc += torch.tensor([loss.double().item() * n, n], dtype=torch.float64)
    acc = _all_reduce_sum(acc)
    mean = float(acc[0] / acc[1]) if acc[1] > 0 else float("nan")
    return {"eval_loss": mean, "eval_ppl": math.exp(mean) if mean == mean else float("nan")}


@torch.no_grad()
def evaluate_pairs(engine: Any, batches: list[dict[str, torch.Tensor]], objective: Objective,
                   names: tuple[str, ...], prefix: str = "eval_") -> dict[str, float]:
    """Pair-weighted means of the objective's loss and ``names`` metrics over held-out preference
    micro-batches, reduced over ranks (collective: every rank calls it; an empty share adds nothing)."""
    engine.eval()
    vec = torch.zeros(len(names) + 1, dtype=torch.float64)
    for mb in batches:
        loss, stats = objective(engine, mb)
        pairs = mb["input_ids"].shape[0] // 2
        values = {"loss": float(loss), **stats}
        vec[:-1] += torch.tensor([values[k] * pairs for k in names], dtype=torch.float64)
        vec[-1] += pairs
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(vec)
    engine.train()
    total = float(vec[-1])
    return {f"{prefix}{k}": float(vec[i]) / total for i, k in enumerate(names)} if total > 0 else {}


"""Derived numbers of a validated training config (sizes, accumulation, memory); never stored in the
config. Each kind's dry-run plan is declared by its module (``orchestrator.kinds``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from orchestrator.config.jobs import TrainJobConfig

GIB = 1024**3


@dataclass(frozen=True)
class TrainPlan:
    """How a training job is laid out on its workers."""

    world_size: int
    dp_size: int
    tp_size: int
    pp_size: int
    grad_accum_steps: int
    micro_batch_size: int
    global_batch_size: int
    tokens_per_step: int
    num_params: int
    precision: str
    pipeline_bubble: float
    """Idle fraction of a pipeline step, (p-1)/(m+p-1) with m micro-batches (0 without PP)."""
    memory_gib: dict[str, float] = field(default_factory=dict)
    """Estimated per-worker memory: model states (ZeRO formula), activations, total."""
    placement: dict[str, Any] = field(default_factory=dict)
    """``cluster.placement``: Ray's strategy and which ranks it puts together (see :func:`placement_plan`)."""
    elastic_world_sizes: list[int] = field(default_factory=list)
    """Smaller world sizes a restart may use when the full group does not fit (``cluster.min_workers``; see
    :func:`elastic_world_sizes`); empty = no elastic shrink."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def model_state_bytes_per_param(zero_stage: int, dp: int, mixed_precision: bool) -> float:
    """Bytes of params+grads+Adam states per parameter held by one data-parallel rank.

    Mixed-precision Adam keeps 2 (fp16/bf16 params) + 2 (grads) + 12 (fp32 master, momentum,
    variance) = 16 bytes/param; ZeRO-1 shards the 12, ZeRO-2 also the gradients, ZeRO-3 everything
    (Rajbhandari et al., 2020). Pure fp32 training is 4 + 4 + 8 = 16 bytes with the same split.
    """
    p, g, o = (2, 2, 12) if mixed_precision else (4, 4, 8)
    if zero_stage == 0:
        return p + g + o
    if zero_stage == 1:
        return p + g + o / dp
    if zero_stage == 2:
        return p + (g + o) / dp
    return (p + g + o) / dp


def activation_bytes(cfg: TrainJobConfig, tp: int, pp: int, bytes_per_value: int) -> float:
    """Activation memory of one micro-batch (Korthikanti et al. 2022, no sequence parallelism):
    s*b*h*(34 + 5*a*s/h) bytes per layer at 2 bytes/value, divided by tp, for the layers of one stage;
    with activation checkpointing only each layer's input (2*s*b*h) is kept."""
    m = cfg.model
    s, b, h, a = m.seq_len, cfg.parallel.micro_batch_size, m.hidden_size, m.num_heads
    layers = m.num_layers // pp
    scale = bytes_per_value / 2
    if cfg.parallel.activation_checkpointing:
        per_layer = 2 * s * b * h * scale
    else:
        per_layer = s * b * h * (34 + 5 * a * s / h) / tp * scale
    logits = s * b * m.vocab_size * 4  # fp32 logits for the loss, on the last stage
    return layers * per_layer + logits


def model_parallel_groups(world: int, model_parallel: int) -> list[list[int]]:
    """The ranks of each model-parallel (TP or PP) group: ``model_parallel`` consecutive ranks (DeepSpeed's
    (data, tensor) mesh and our (data, pipe) topology both put a group's ranks next to each other)."""
    return [list(range(i, i + model_parallel)) for i in range(0, world, model_parallel)]


def _span(ranks: list[int]) -> str:
    return f"rank {ranks[0]}" if len(ranks) == 1 else f"ranks {ranks[0]}-{ranks[-1]}"


def placement_plan(strategy: str, world: int, model_parallel: int, mp_name: str = "tp", cpus_per_worker: int = 1,
                   use_gpu: bool = False) -> dict[str, Any]:
    """Which ranks land together under ``cluster.placement`` (what the worker group reserves).

    The unit Ray places is a placement-group bundle: one per rank, or with ``model_parallel`` > 1 one per
    model-parallel group holding all its ranks' resources, so Ray puts each group on one node atomically
    (a bundle never spans nodes) and the group's ranks get consecutive numbers. ``pack``: every bundle on
    as few nodes as hold them (the driver's node first; ranks are numbered node by node). ``spread``: the
    bundles on different nodes while there are free ones.
    """
    groups = model_parallel_groups(world, model_parallel)
    units = groups if model_parallel > 1 else [[r] for r in range(world)]
    per_rank = {"CPU": cpus_per_worker, **({"GPU": 1} if use_gpu else {})}
    lines = [f"{_span(g)}: one node ({mp_name} group {i})" for i, g in enumerate(groups)] if model_parallel > 1 else []
    if strategy == "pack":
        together = [list(range(world))]
        lines.append(f"{_span(together[0])}: as few nodes as hold them, the driver's node first")
    else:
        together = units
        what = f"each {mp_name} group" if model_parallel > 1 else ", ".join(map(str, range(world))).join(("ranks ", ""))
        lines.append(f"{what}: a node of its own while there are free nodes")
    return {"strategy": strategy, "ray_strategy": strategy.upper(), "ranks_together": together,
            "model_parallel_groups": groups,
            "bundles": {"count": len(units), "ranks_each": len(units[0]),
                        "resources_each": {k: v * len(units[0]) for k, v in per_rank.items()}},
            "lands_together": lines}


def elastic_world_sizes(cfg: TrainJobConfig) -> list[int]:
    """World sizes below ``cluster.num_workers`` a restart may shrink to (``cluster.min_workers``), largest
    first: multiples of tp*pp (whole model-parallel groups) down to ``min_workers`` whose data-parallel size
    splits ``trainer.global_batch_size`` into micro-batches (the global batch, hence the loss curve, stays
    the job's). Empty when elasticity is off."""
    c, p = cfg.cluster, cfg.parallel
    mp = p.tensor_parallel * p.pipeline_parallel
    low = c.num_workers if c.min_workers is None else c.min_workers
    return [w for w in range(c.num_workers - 1, low - 1, -1)
            if w % mp == 0 and cfg.trainer.global_batch_size % (p.micro_batch_size * (w // mp)) == 0]


def make_train_plan(cfg: TrainJobConfig) -> TrainPlan:
    p, m, c = cfg.parallel, cfg.model, cfg.cluster
    tp, pp = p.tensor_parallel, p.pipeline_parallel
    world = c.num_workers
    dp = world // (tp * pp)
    accum = cfg.trainer.global_batch_size // (p.micro_batch_size * dp)
    precision = p.resolved_precision(c.use_gpu)
    mixed = precision != "fp32"
    n = m.num_params()
    params_per_worker = n / (tp * pp)
    states = params_per_worker * model_state_bytes_per_param(p.zero_stage, dp, mixed)
    offloaded = 0.0
    if p.offload == "cpu":  # optimizer states (and ZeRO-3 params) live in host memory instead
        opt = params_per_worker * (12 if mixed else 8) / dp
        offloaded = opt + (params_per_worker * (2 if mixed else 4) / dp if p.zero_stage == 3 else 0.0)
        states -= offloaded
    acts = activation_bytes(cfg, tp, pp, 2 if mixed else 4)
    bubble = (pp - 1) / (accum + pp - 1) if pp > 1 else 0.0
    return TrainPlan(
        world_size=world, dp_size=dp, tp_size=tp, pp_size=pp, grad_accum_steps=accum,
        micro_batch_size=p.micro_batch_size, global_batch_size=cfg.trainer.global_batch_size,
        tokens_per_step=cfg.trainer.global_batch_size * m.seq_len, num_params=n, precision=precision,
        pipeline_bubble=round(bubble, 4), placement=placement_plan(c.placement, world, tp * pp, "pp" if pp > 1 else "tp", c.cpus_per_worker, c.use_gpu),
        elastic_world_sizes=elastic_world_sizes(cfg),
        memory_gib={
            "model_states": round(states / GIB, 4),
            "activations": round(acts / GIB, 4),
            "offloaded_to_cpu": round(offloaded / GIB, 4),
            "total_device": round((states + acts) / GIB, 4),
        },
    )

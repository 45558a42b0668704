"""Elastic data parallelism of a training job's worker group (``cluster.min_workers``): when a restart after a
failure cannot get ``cluster.num_workers`` ranks within ``cluster.elastic_wait_s`` (a lost node that nothing
replaced), the group runs with fewer data-parallel ranks instead of waiting.

What stays the same, so the run continues the curve it was on:
* the global batch (``trainer.global_batch_size``): each rank accumulates more micro-batches
  (``grad_accum_steps = global_batch / (micro_batch * dp)``), so every optimizer step averages the gradient
  of the same blocks;
* the data order: :class:`~orchestrator.training.sampler.StepSampler`'s only state is the global position,
  and rank ``r`` of ``dp`` takes the ``r``-th share of the same global batch;
* the held-out evaluation: ``trainer.eval_batches`` counts micro-batches per rank, so it grows by
  ``dp_full / dp`` (rounded up) to read the same blocks;
* the checkpoint: ZeRO-0 (checked before Ray starts) saves full model and optimizer states that load at any
  data-parallel size; its client state (config hash, shape) is the full job's, so a later
  ``orchestrator resume`` at the full size continues from it.

Not bit-identical to an uninterrupted run: the same gradients are summed in another order (more
accumulation on fewer ranks, a smaller all-reduce), which changes the last bits of each step's update.
Measured on the two-node test cluster (fp32 on CPU, 2 -> 1 ranks after step 2 of 10): the losses of the
recomputed steps 3-10 within a relative 1.3e-8 of the uninterrupted run's; the test allows 1e-6
(``tests/integration/test_multinode.py``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from orchestrator.config.jobs import TrainJobConfig
from orchestrator.config.plan import elastic_world_sizes, make_train_plan
from orchestrator.runtime.rank_group import Elastic


def elastic_restarts(cfg: TrainJobConfig) -> Optional[Elastic]:
    """The worker group's elastic policy for ``cfg`` (None when ``cluster.min_workers`` allows no shrink)."""
    sizes = elastic_world_sizes(cfg)
    return Elastic(tuple(sizes), cfg.cluster.elastic_wait_s, resize_loop_config) if sizes else None


def resize_loop_config(config: dict[str, Any], world: int) -> dict[str, Any]:
    """The worker group's ``{"args": WorkerArgs}`` for ``world`` ranks (see :func:`resize_args`)."""
    return {**config, "args": resize_args(config["args"], world)}


def resize_args(args: Any, world: int) -> Any:
    """``args`` (a :class:`~orchestrator.training.worker.WorkerArgs` of the full job) for ``world`` ranks: the
    config with ``cluster.num_workers=world`` and the held-out batches per rank scaled up, and its plan (the
    data-parallel size and gradient accumulation the engine and the sampler read); everything else, the
    checkpoint's client state included, is the full job's."""
    cfg = args.cfg
    dp = world // (cfg.parallel.tensor_parallel * cfg.parallel.pipeline_parallel)
    eval_batches = -(-cfg.trainer.eval_batches * args.plan.dp_size // dp)
    resized = dataclasses.replace(cfg, cluster=dataclasses.replace(cfg.cluster, num_workers=world),
                                  trainer=dataclasses.replace(cfg.trainer, eval_batches=eval_batches))
    resized.freeze()
    return dataclasses.replace(args, cfg=resized, plan=make_train_plan(resized))

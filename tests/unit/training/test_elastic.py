"""Elastic restarts (``cluster.min_workers``): what a smaller worker group is handed keeps the job's global batch,
data order and held-out blocks."""

from __future__ import annotations

import numpy as np

from orchestrator.config.plan import make_train_plan
from orchestrator.kinds import load
from orchestrator.kinds.pretrain import PretrainTask
from orchestrator.training.data import eval_block_indices
from orchestrator.training.elastic import elastic_restarts, resize_loop_config
from orchestrator.training.sampler import StepSampler
from orchestrator.training.worker import WorkerArgs


def _args(cfg):
    return WorkerArgs(cfg=cfg, plan=make_train_plan(cfg), task=PretrainTask(), dataset_dir="d", model_dir=None,
                      tokenizer_dir=None, upstream={}, resume_dir=None, run_id="r",
                      extra_state={"config_hash": "h"}, export_dir=None, attempt_id="a")


def test_no_policy_without_min_workers():
    assert elastic_restarts(load("pretrain", ["cluster.num_workers=4"])) is None


def test_a_smaller_group_keeps_the_global_batch_and_sees_the_same_blocks():
    cfg = load("pretrain", ["cluster.num_workers=4", "cluster.min_workers=1", "trainer.global_batch_size=8",
                            "trainer.eval_batches=3", "cluster.elastic_wait_s=7"])
    policy = elastic_restarts(cfg)
    assert policy.world_sizes == (2, 1) and policy.wait_s == 7  # 3 ranks cannot split 8 blocks
    full = _args(cfg)
    config = {"args": full, "other": 1}
    small = policy.resize(config, 2)
    args = small["args"]
    assert small["other"] == 1 and config["args"] is full  # the full job's config is untouched (next restart)
    assert args.cfg.cluster.num_workers == 2 and args.plan.world_size == 2 and args.plan.dp_size == 2
    assert args.plan.global_batch_size == 8 and args.plan.grad_accum_steps == 4 == 2 * full.plan.grad_accum_steps
    assert args.extra_state == full.extra_state and args.cfg.model == cfg.model
    # the data order: the union of every rank's blocks at every step is the full job's global batch
    indices = np.arange(50)
    for consumed in (0, 8, 48):
        def blocks(plan):
            out = []
            for r in range(plan.dp_size):
                s = StepSampler(indices, plan.global_batch_size, plan.micro_batch_size, r, plan.dp_size, seed=3,
                                consumed=consumed)
                out += [int(b) for mb in s.next_step() for b in mb]
            return out
        assert blocks(args.plan) == blocks(full.plan)
    # the held-out set: eval_batches per rank grows so that the same blocks are read
    held = np.arange(100)
    assert args.cfg.trainer.eval_batches == 6
    assert list(eval_block_indices(held, 1, 2, 6)) == list(eval_block_indices(held, 1, 4, 3))
    one = resize_loop_config(config, 1)["args"]
    assert one.plan.grad_accum_steps == 8 and one.cfg.trainer.eval_batches == 12
    assert one.cfg.cluster.min_workers == 1  # a resized config is still a valid one

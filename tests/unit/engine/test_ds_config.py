"""DeepSpeed config builder, LR schedule and optimizer groups (pure, no DeepSpeed import)."""

from __future__ import annotations

import math

import pytest
import torch

from orchestrator.kinds import load
from orchestrator.config.plan import make_train_plan
from orchestrator.engine.ds_config import build_ds_config
from orchestrator.engine.optim import lr_factor, param_groups


def ds_for(*overrides: str) -> dict:
    cfg = load("pretrain", list(overrides))
    return build_ds_config(cfg, make_train_plan(cfg))


@pytest.mark.parametrize("stage", (0, 1, 2, 3))
def test_zero_stage_and_batch_sizes(stage):
    ds = ds_for(f"parallel.zero_stage={stage}", "trainer.global_batch_size=16", "parallel.micro_batch_size=2")
    assert ds["zero_optimization"]["stage"] == stage
    # 2 workers, dp=2: 16 = 2 micro x 4 accumulation x 2 ranks
    assert (ds["train_batch_size"], ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"]) == (16, 2, 4)
    assert "bf16" not in ds and "fp16" not in ds  # CPU: fp32, bit-exact
    assert ds["gradient_clipping"] == 1.0


def test_offload_and_gpu_precision():
    ds = ds_for("parallel=zero3_offload", "cluster.use_gpu=true")
    z = ds["zero_optimization"]
    assert z["offload_optimizer"]["device"] == "cpu" and z["offload_param"]["device"] == "cpu"
    assert ds["bf16"] == {"enabled": True}
    assert ds_for("parallel.zero_stage=2", "parallel.offload=cpu")["zero_optimization"].get("offload_param") is None


def test_grad_clip_zero_disables_clipping():
    assert ds_for("trainer.grad_clip=0")["gradient_clipping"] == 0


def test_lr_schedule_warmup_then_cosine_to_min():
    f = dict(warmup_steps=2, max_steps=10, schedule="cosine", min_lr_ratio=0.1)
    assert [lr_factor(s, **f) for s in (0, 1)] == [0.5, 1.0]
    assert lr_factor(2, **f) == 1.0
    assert lr_factor(9, **f) == pytest.approx(0.1)
    mid = lr_factor(2 + 7 / 2, **f)  # half-way through the decay
    assert mid == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    vals = [lr_factor(s, **f) for s in range(2, 10)]
    assert vals == sorted(vals, reverse=True)


def test_lr_schedule_linear_and_constant():
    assert lr_factor(9, warmup_steps=0, max_steps=10, schedule="linear", min_lr_ratio=0.0) == pytest.approx(0.0)
    assert lr_factor(5, warmup_steps=0, max_steps=10, schedule="constant", min_lr_ratio=0.1) == 1.0


def test_no_weight_decay_on_biases_and_norms_and_ties_once():
    from orchestrator.config.model import ModelConfig
    from orchestrator.models.build import build_causal_lm

    model = build_causal_lm(ModelConfig(arch="gpt2"), seed=0)
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    ids = [id(p) for g in (decay, no_decay) for p in g["params"]]
    assert len(ids) == len(set(ids))  # the tied embedding/LM head appears once
    assert sum(p.numel() for p in decay["params"] + no_decay["params"]) == sum(
        p.numel() for p in model.parameters())
    assert isinstance(decay["params"][0], torch.nn.Parameter)

"""Fast checks of the TP/PP wiring: which topologies the config accepts, the plan's numbers, the DeepSpeed
config section, the pipeline layer list and the rank layout (no Ray, no process groups)."""

from __future__ import annotations

import pytest

from orchestrator.kinds import load
from orchestrator.config.plan import make_train_plan
from orchestrator.engine.ds_config import build_ds_config


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_tensor_parallel_composes_with_every_zero_stage(stage):
    cfg = load("pretrain", ["parallel=tp2", f"parallel.zero_stage={stage}"])
    plan = make_train_plan(cfg)
    assert (plan.dp_size, plan.tp_size, plan.pp_size) == (1, 2, 1)
    ds = build_ds_config(cfg, plan)
    assert ds["tensor_parallel"] == {"autotp_size": 2}
    assert ds["train_batch_size"] == plan.micro_batch_size * plan.grad_accum_steps * plan.dp_size


@pytest.mark.parametrize("stage", [0, 1])
def test_pipeline_accepts_zero_0_and_1_and_reports_the_bubble(stage):
    cfg = load("pretrain", ["parallel=pp2", f"parallel.zero_stage={stage}", "trainer.global_batch_size=6"])
    plan = make_train_plan(cfg)
    assert (plan.dp_size, plan.pp_size, plan.grad_accum_steps) == (1, 2, 6)
    assert plan.pipeline_bubble == round(1 / 7, 4)  # (p-1)/(m+p-1), rounded in the plan
    assert "tensor_parallel" not in build_ds_config(cfg, plan)


def test_four_workers_tp2_gives_two_data_parallel_ranks():
    plan = make_train_plan(load("pretrain", ["parallel=tp2", "cluster.num_workers=4"]))
    assert (plan.dp_size, plan.tp_size) == (2, 2)


def test_pipeline_partition_methods():
    from orchestrator.engine.pipe import partition_method

    assert partition_method("parameters") == "parameters"
    assert partition_method("uniform") == "type:_Block"  # balance transformer blocks, not all layers


@pytest.mark.parametrize("arch,tied,kinds", [
    ("llama", True, ["_WordEmbed", "_Block", "_Block", "_Norm", "_WordEmbed"]),
    ("llama", False, ["_WordEmbed", "_Block", "_Block", "_Norm", "_Head"]),
    ("gpt2", True, ["_WordEmbed", "_PosEmbed", "_Block", "_Block", "_Norm", "_WordEmbed"]),
])
def test_pipeline_layer_list(arch, tied, kinds):
    from deepspeed.pipe import TiedLayerSpec

    from orchestrator.engine.pipe import layer_specs
    from orchestrator.models.build import build_causal_lm

    model_preset = "tiny" if arch == "llama" else "tiny_gpt2"
    cfg = load("pretrain", [f"model={model_preset}", f"model.tie_embeddings={str(tied).lower()}"])
    specs = layer_specs(build_causal_lm(cfg.model, 0))
    assert [s.typename.__name__ for s in specs] == kinds
    assert isinstance(specs[0], TiedLayerSpec) == tied and isinstance(specs[-1], TiedLayerSpec) == tied


def test_pipeline_topology_puts_stages_of_one_pipeline_on_consecutive_ranks():
    from orchestrator.engine.pipe import data_pipe_topology

    topo = data_pipe_topology(dp=2, pp=2)
    assert [(topo.get_coord(r).data, topo.get_coord(r).pipe) for r in range(4)] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    # the worker computes its data-parallel rank as rank // (tp * pp)
    assert [topo.get_coord(r).data for r in range(4)] == [r // 2 for r in range(4)]


@pytest.mark.parametrize("preset,tied", [("tiny", True), ("tiny", False), ("tiny_gpt2", True)])
def test_pipeline_layers_chained_give_the_hf_models_logits_and_loss(preset, tied):
    """The stage layers, run one after another (what the pipeline does across ranks), equal the HF model."""
    import torch
    from deepspeed.pipe import TiedLayerSpec
    from transformers.loss.loss_utils import ForCausalLMLoss

    from orchestrator.engine.pipe import layer_specs
    from orchestrator.models.build import build_causal_lm

    cfg = load("pretrain", [f"model={preset}", f"model.tie_embeddings={str(tied).lower()}"])
    hf = build_causal_lm(cfg.model, 0).eval()
    ids = torch.randint(0, cfg.model.vocab_size, (2, 16), generator=torch.Generator().manual_seed(3))
    x: torch.Tensor = ids
    built: dict[str, torch.nn.Module] = {}
    with torch.no_grad():
        for spec in layer_specs(hf):
            if isinstance(spec, TiedLayerSpec):
                module = built.setdefault(spec.key, spec.build())
                x = spec.forward_fn(module, x) if spec.forward_fn else module(x)
            else:
                x = spec.build()(x)
        ref = hf(input_ids=ids, labels=ids)
    torch.testing.assert_close(x, ref.logits, rtol=1e-6, atol=1e-6)
    assert float(ForCausalLMLoss(x, ids, vocab_size=cfg.model.vocab_size)) == pytest.approx(float(ref.loss), rel=1e-6)


def test_sft_keeps_the_output_head_whole_under_tensor_parallelism():
    cfg = load("sft", ["parallel=tp2"])
    assert build_ds_config(cfg, make_train_plan(cfg))["tensor_parallel"] == {"autotp_size": 2,
                                                                           "vocab_parallel_lm_head": False}


@pytest.mark.parametrize("kind,overrides,key", [
    ("sft", ["parallel.pipeline_parallel=2", "parallel.zero_stage=1"], "parallel.pipeline_parallel"),
    ("sft", ["parallel=tp2", "sft.lora_rank=4"], "parallel.tensor_parallel"),
    ("reward_model", ["parallel=tp2"], "parallel.tensor_parallel"),
    ("dpo", ["parallel=pp2"], "parallel.pipeline_parallel"),
])
def test_jobs_without_tp_or_pp_workers_refuse_them_before_ray(kind, overrides, key):
    from orchestrator.config import ConfigError

    with pytest.raises(ConfigError) as err:
        load(kind, overrides)  # the kind's spec is checked when the config loads, as for run and submit
    assert err.value.key == key


def test_pretrain_and_sft_accept_tensor_parallelism():
    for kind in ("pretrain", "sft"):
        assert load(kind, ["parallel=tp2"]).parallel.tensor_parallel == 2
    assert load("pretrain", ["parallel=pp2"]).parallel.pipeline_parallel == 2

"""Every primary config and preset composes and validates; invalid configs are refused by name."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time

import pytest

from orchestrator import kinds
from orchestrator.config import ConfigError
from orchestrator.config.load import conf_dir
from orchestrator.kinds import load
from orchestrator.config.plan import make_train_plan, model_state_bytes_per_param
from tests.conftest import REPO, orchestrator_cmd

TRAIN_KINDS = ("pretrain", "sft", "reward_model", "ppo", "dpo")


def presets(group: str) -> list[str]:
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


@pytest.mark.parametrize("kind", kinds.names())
def test_every_primary_config_composes(kind):
    cfg = load(kind)
    assert cfg.kind == kind
    assert cfg.output_dir.endswith(cfg.run_name)
    assert cfg.tracking.uri.startswith("sqlite:///") and cfg.tracking.uri.endswith("mlflow.db")


@pytest.mark.parametrize("preset", presets("model"))
def test_model_presets(preset):
    cfg = load("pretrain", [f"model={preset}", "parallel=zero0"])
    assert cfg.model.num_params() > 0


def test_model_param_counts_match_published_sizes():
    assert abs(load("pretrain", ["model=gpt2_125m"]).model.num_params() - 124.4e6) < 1.5e6
    assert 1.1e9 < load("pretrain", ["model=llama_1b"]).model.num_params() < 1.3e9
    assert 6.6e9 < load("pretrain", ["model=llama_7b"]).model.num_params() < 6.8e9


@pytest.mark.parametrize("preset", presets("parallel"))
def test_parallel_presets(preset):
    cfg = load("pretrain", [f"parallel={preset}"])
    plan = make_train_plan(cfg)
    assert plan.dp_size * plan.tp_size * plan.pp_size == plan.world_size == 2


@pytest.mark.parametrize("group", ["cluster", "optim", "tracking"])
def test_other_presets(group):
    for preset in presets(group):
        assert getattr(load("pretrain", [f"{group}={preset}"]), group) is not None


@pytest.mark.parametrize("preset", presets("pipeline"))
def test_pipeline_presets(preset):
    cfg = load("pipeline", [f"pipeline={preset}"])
    assert cfg.pipeline.name == preset
    assert [s.kind for s in cfg.pipeline.stages][0] == "data_prep"


@pytest.mark.parametrize("exp", presets("experiment"))
def test_experiments(exp):
    cfg = load("pretrain", [f"+experiment={exp}"])
    assert cfg.trainer.global_batch_size % (cfg.parallel.micro_batch_size * make_train_plan(cfg).dp_size) == 0


INVALID = [
    (["parallel.zero_stage=7"], "parallel.zero_stage", "not a ZeRO stage"),
    (["parallel.tensor_parallel=3"], "parallel.tensor_parallel", "does not divide model.num_heads=4"),
    (["parallel.pipeline_parallel=2", "parallel.zero_stage=3"], "parallel.zero_stage", "pipeline"),
    (["parallel.pipeline_parallel=2", "parallel.zero_stage=2"], "parallel.zero_stage", "pipeline"),
    (["trainer.global_batch_size=7", "parallel.micro_batch_size=2"], "trainer.global_batch_size", "not divisible"),
    (["trainer.maxsteps=3"], "trainer.maxsteps", "unknown key"),
    (["trainer.max_steps=abc"], "trainer.max_steps", "not a valid Integer"),
    (["model=huge"], "model", "unknown preset"),
    (["parallel.pipeline_parallel=3", "cluster.num_workers=3", "trainer.global_batch_size=9"],
     "parallel.pipeline_parallel", "does not divide model.num_layers=2"),
    (["cluster.num_workers=3", "parallel=tp2"], "cluster.num_workers", "dp*tp*pp"),
    (["parallel.tensor_parallel=2", "parallel.pipeline_parallel=2", "cluster.num_workers=4"],
     "parallel.pipeline_parallel", "cannot be combined"),
    (["cluster.num_workers=3", "parallel=pp2"], "cluster.num_workers", "dp*tp*pp"),
    (["model.num_kv_heads=2", "parallel.tensor_parallel=4", "cluster.num_workers=4"],
     "parallel.tensor_parallel", "key/value heads"),
    (["parallel.offload=cpu", "parallel.zero_stage=0"], "parallel.offload", "ZeRO >= 1"),
    (["parallel.precision=fp16"], "parallel.precision", "needs a GPU"),
    (["parallel.precision=fp8"], "parallel.precision", "unknown precision"),
    (["model.arch=mamba"], "model.arch", "unknown architecture"),
    (["model.hidden_size=65"], "model.hidden_size", "not divisible"),
    (["model.num_kv_heads=3"], "model.num_kv_heads", "does not divide"),
    (["trainer.lr=0"], "trainer.lr", "not positive"),
    (["trainer.max_steps=0"], "trainer.max_steps", ">= 1"),
    (["optim.schedule=step"], "optim.schedule", "unknown schedule"),
    (["cluster.num_workers=0"], "cluster.num_workers", ">= 1"),
    (["data.path=/does/not/exist"], "data.path", "does not exist"),
    (["data.eval_fraction=0.7"], "data.eval_fraction", "not in"),
    (["resume=/no/such/checkpoint"], "resume", "does not exist"),
    (["model.pretrained=/no/such/model"], "model.pretrained", "not a directory"),
    (["run_name=a/b"], "run_name", "invalid name"),
]


@pytest.mark.parametrize("overrides,key,fragment", INVALID, ids=[" ".join(o) for o, _, _ in INVALID])
def test_invalid_configs_are_refused(overrides, key, fragment):
    with pytest.raises(ConfigError) as info:
        load("pretrain", overrides)
    assert info.value.key == key
    assert fragment in str(info.value)
    assert "fix:" in str(info.value)


@pytest.mark.parametrize("kind,overrides,key", [
    ("data_prep", ["data.input=/no/such/*.jsonl"], "data.input"),
    ("data_prep", ["data.format=xml"], "data.format"),
    ("data_prep", ["data.minhash.num_bands=0"], "data.minhash.num_bands"),
    ("dpo", ["dpo.beta=0"], "dpo.beta"),
    ("ppo", ["ppo.clip_eps=1.5"], "ppo.clip_eps"),
    ("pipeline", ["pipeline=nope"], "pipeline"),
])
def test_invalid_configs_of_other_kinds(kind, overrides, key):
    with pytest.raises(ConfigError) as info:
        load(kind, overrides)
    assert info.value.key == key


def test_resolved_config_is_read_only():
    cfg = load("pretrain")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.trainer.max_steps = 5  # type: ignore[misc]
    changed = dataclasses.replace(cfg, run_name="other")
    assert changed.run_name == "other" and cfg.run_name == "pretrain"


def test_zero_memory_formulas():
    # mixed-precision Adam: 16 bytes/param; ZeRO-1 4+12/N, ZeRO-2 2+14/N, ZeRO-3 16/N
    assert model_state_bytes_per_param(0, 8, True) == 16
    assert model_state_bytes_per_param(1, 8, True) == 4 + 12 / 8
    assert model_state_bytes_per_param(2, 8, True) == 2 + 14 / 8
    assert model_state_bytes_per_param(3, 8, True) == 16 / 8


def test_plan_numbers():
    cfg = load("pretrain", ["trainer.global_batch_size=16", "parallel.micro_batch_size=2"])
    plan = make_train_plan(cfg)
    assert (plan.dp_size, plan.grad_accum_steps, plan.tokens_per_step) == (2, 4, 16 * 64)
    pp = make_train_plan(load("pretrain", ["parallel=pp2", "trainer.global_batch_size=4"]))
    assert pp.dp_size == 1 and pp.grad_accum_steps == 4 and pp.pipeline_bubble == pytest.approx(1 / 5)


def test_data_prep_plan_lsh_curve_and_bucket_size():
    from orchestrator.kinds import plan as make_plan

    plan = make_plan(load("data_prep", ["data.minhash.num_bands=20", "data.minhash.rows_per_band=5"]))
    assert plan["minhash_permutations"] == 100
    curve = plan["lsh_detection_probability"]
    assert curve[0.8] == pytest.approx(1 - (1 - 0.8**5) ** 20, abs=1e-4) and curve[0.5] < curve[0.9]
    doc_bytes = plan["near_dedup_shuffle_bytes_per_doc"]
    assert plan["near_dedup_verification"] == "jaccard" and doc_bytes == 20 * (16 + 32)  # no signatures shuffled
    assert plan["near_dedup_docs_per_bucket"] == (32 << 20) // doc_bytes
    estimate = make_plan(load("data_prep", ["data.minhash.num_bands=20", "data.minhash.rows_per_band=5",
                                            "data.minhash.verification=estimate"]))
    assert estimate["near_dedup_shuffle_bytes_per_doc"] == 20 * (16 + 400 + 32)
    halved = make_plan(load("data_prep", ["data.minhash.num_bands=20", "data.minhash.rows_per_band=5",
                                          "data.shuffle_partition_mb=16"]))
    assert halved["near_dedup_docs_per_bucket"] == (16 << 20) // doc_bytes


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, RAY_ADDRESS="")
    return subprocess.run([*orchestrator_cmd(), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_cli_dry_run_prints_plan_quickly(tmp_path):
    t0 = time.time()
    res = run_cli("run", "pretrain", "dry_run=true", f"workspace={tmp_path}")
    assert res.returncode == 0, res.stderr
    assert "# plan" in res.stdout and "grad_accum_steps: 4" in res.stdout and "model_states" in res.stdout
    assert time.time() - t0 < 20
    assert not (tmp_path / "pretrain").exists()  # a dry run writes nothing


@pytest.mark.parametrize("overrides,key", [
    (["parallel.zero_stage=7"], "parallel.zero_stage"),
    (["parallel.tensor_parallel=3"], "parallel.tensor_parallel"),
    (["parallel.pipeline_parallel=2", "parallel.zero_stage=3"], "parallel.zero_stage"),
    (["trainer.global_batch_size=7", "parallel.micro_batch_size=2"], "trainer.global_batch_size"),
    (["trainer.maxsteps=3"], "trainer.maxsteps"),
    (["cluster.min_workers=1", "parallel=zero1"], "cluster.min_workers"),
])
def test_cli_refusals_exit_2_with_one_line_and_no_ray(overrides, key, tmp_path):
    ray_dir = tmp_path / "ray"
    res = subprocess.run(
        [sys.executable, "-c",
         "import sys; from orchestrator.cli import main\n"
         "try:\n    main(sys.argv[1:])\nfinally:\n    print('RAY_IMPORTED' if 'ray' in sys.modules else 'NO_RAY')",
         "run", "pretrain", *overrides],
        cwd=REPO, capture_output=True, text=True, timeout=60,
        env=dict(os.environ, RAY_TMPDIR=str(ray_dir)))
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {key}:"), res.stderr
    assert "Traceback" not in res.stderr
    assert "NO_RAY" in res.stdout and not ray_dir.exists()


def test_hydra_entry_point_refuses_with_exit_2():
    res = subprocess.run([sys.executable, "jobs/pretrain.py", "trainer.maxsteps=3"], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "trainer.maxsteps" in res.stderr


def test_secrets_are_masked_in_printed_config(tmp_path):
    res = run_cli("run", "pretrain", "dry_run=true", f"workspace={tmp_path}",
                  "tracking.uri=http://bob:hunter2@127.0.0.1:5000", "+cluster.env.HF_TOKEN=abc123")
    assert res.returncode == 0, res.stderr
    assert "hunter2" not in res.stdout and "abc123" not in res.stdout and "bob:***@" in res.stdout

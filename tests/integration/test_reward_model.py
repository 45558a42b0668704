"""Reward model (Bradley-Terry) on the generated preference pairs, then used as PPO's reward role."""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.rlhf_helpers import build_sft_policy, job_cfg

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sft_policy(ray_local, tmp_path_factory):
    return build_sft_policy(tmp_path_factory.getbasetemp() / "rlhf_shared")[0]


@pytest.fixture(scope="module")
def reward_model(sft_policy, tmp_path_factory):
    """Trained from the SFT policy as registered in MLflow (``models:/sft/<version>``), in the same store."""
    from mlflow import MlflowClient

    from orchestrator.kinds.reward_model import run as run_reward_model

    state = json.loads((Path(sft_policy).parent / "tracking.json").read_text())
    version = max(int(v.version) for v in MlflowClient(state["tracking_uri"]).search_model_versions("name='sft'"))
    cfg = job_cfg("reward_model", tmp_path_factory.mktemp("rm"), "rm", f"model.pretrained=models:/sft/{version}",
                  f"tracking.uri={state['tracking_uri']}",
                  "trainer.max_steps=150", "trainer.global_batch_size=32", "parallel.micro_batch_size=16",
                  "trainer.lr=2e-3", "optim.weight_decay=0.0", "trainer.save_every=0")
    res = run_reward_model(cfg)
    res["upstream"] = f"models:/sft/{version}"
    return res


def test_reward_model_ranks_held_out_pairs_well_above_chance(reward_model):
    ev = reward_model["eval"]
    print("held-out accuracy", ev["initial_eval_accuracy"], "->", ev["eval_accuracy"])
    assert ev["eval_accuracy"] >= 0.8, ev
    assert ev["eval_accuracy"] >= ev["initial_eval_accuracy"] + 0.2
    assert ev["eval_loss"] < ev["initial_eval_loss"]
    meta = json.loads((Path(reward_model["export_dir"]) / "scalar_head.json").read_text())
    assert meta["kind"] == "reward" and meta["reward_std"] > 0
    assert meta["reward_mean"] == pytest.approx(ev["reward_mean"])


def test_reward_model_records_its_upstream_lineage(reward_model):
    from mlflow import MlflowClient


    uri = json.loads((Path(reward_model["output_dir"]) / "tracking.json").read_text())["tracking_uri"]
    run = MlflowClient(uri).get_run(reward_model["run_id"])
    assert run.data.tags["upstream.model"] == reward_model["upstream"] and run.data.tags["job_kind"] == "reward_model"
    assert run.data.metrics["eval_accuracy"] == pytest.approx(reward_model["eval"]["eval_accuracy"])


def test_ppo_scores_with_the_trained_reward_model(reward_model, sft_policy, tmp_path):
    from orchestrator.kinds.ppo import run as run_ppo
    from orchestrator.training.loop import read_steps

    cfg = job_cfg("ppo", tmp_path, "ppo_rm", f"model.pretrained={sft_policy}",
                  f"ppo.reward_model={reward_model['export_dir']}", "trainer.max_steps=2", "trainer.save_every=0",
                  "ppo.rollout_batch_size=16", "ppo.minibatch_size=8", "tracking.enabled=false")
    res = run_ppo(cfg)
    steps = read_steps(res["output_dir"])
    # the reward role scored with the model (its scale differs from the rule's [0, 1]) and kept the rule for monitoring
    assert steps[1]["reward_mean"] != steps[1]["rule_score_mean"]
    assert 0.0 <= steps[1]["rule_score_mean"] <= 1.0

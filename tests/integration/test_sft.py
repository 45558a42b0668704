"""SFT on 2 Ray Train workers with DeepSpeed: loss on response tokens only, padding and packing,
MLflow lineage and a loadable export."""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.rlhf_helpers import build_sft_policy, held_out_prompts, job_cfg, ray_local_session

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_local():
    with ray_local_session():
        yield


def test_shared_sft_policy_learns_the_task_format(ray_local, tmp_path_factory):
    from orchestrator.rlhf.evaluate import sample_responses
    from orchestrator.rlhf.task import ALL_WORDS, MAX_K

    export, _ = build_sft_policy(tmp_path_factory.getbasetemp() / "rlhf_shared")
    ev = json.loads((Path(export).parent / "eval.json").read_text())
    assert ev["eval_loss"] < 0.5 * ev["initial_eval_loss"], ev  # held-out response-token NLL
    responses = sample_responses(export, held_out_prompts(32), seed=0)
    words = [w for r in responses for w in r.split()]
    # the policy answers with task words and stops (EOS) at about the requested length
    assert sum(w in ALL_WORDS for w in words) / len(words) > 0.9
    assert max(len(r.split()) for r in responses) <= MAX_K + 2


def test_sft_with_packing_tracks_lineage_and_registers_the_model(ray_local, tmp_path):
    from mlflow import MlflowClient

    from orchestrator.training.posttrain import run_sft

    cfg = job_cfg("sft", tmp_path, "sft_packed", "sft.packing=true", "trainer.max_steps=30",
                  "trainer.global_batch_size=16", "parallel.micro_batch_size=8", "trainer.save_every=0")
    res = run_sft(cfg)
    assert res["eval"]["eval_loss"] < 0.6 * res["eval"]["initial_eval_loss"]
    client = MlflowClient(cfg.tracking.uri)
    run = client.get_run(res["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["job_kind"] == "sft"
    assert run.data.tags["dataset.training.digest"]
    assert len(client.get_metric_history(res["run_id"], "loss")) == 30
    assert res["model_version"] is not None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(res["export_dir"])
    assert AutoTokenizer.from_pretrained(res["export_dir"]).eos_token == "<|eos|>"
    assert not (Path(res["export_dir"]) / "scalar_head.safetensors").exists()

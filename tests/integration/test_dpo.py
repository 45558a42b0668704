"""DPO against a frozen copy of the SFT policy raises the chosen-over-rejected margin on held-out pairs."""

from __future__ import annotations

from tests.integration.rlhf_helpers import build_sft_policy, job_cfg

import pytest

pytestmark = pytest.mark.slow


def test_dpo_raises_held_out_margin(ray_local, tmp_path_factory, tmp_path):
    from orchestrator.kinds.dpo import run as run_dpo

    policy = build_sft_policy(tmp_path_factory.getbasetemp() / "rlhf_shared")[0]
    cfg = job_cfg("dpo", tmp_path, "dpo", f"model.pretrained={policy}", "dpo.beta=0.5", "trainer.max_steps=60",
                  "trainer.global_batch_size=16", "parallel.micro_batch_size=8", "trainer.lr=1e-3",
                  "optim.weight_decay=0.0", "trainer.save_every=0", "tracking.enabled=false")
    res = run_dpo(cfg)
    ev = res["eval"]
    print("held-out margin", ev["initial_eval_margin"], "->", ev["eval_margin"], "accuracy", ev["eval_accuracy"])
    assert ev["initial_eval_margin"] == pytest.approx(0.0, abs=1e-6)  # policy == reference at the start
    assert ev["eval_margin"] > 0.2 and ev["eval_accuracy"] > 0.6, ev
    assert ev["eval_chosen_reward"] > ev["eval_rejected_reward"]

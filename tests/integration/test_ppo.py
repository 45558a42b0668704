"""PPO on the demo task with real Ray roles (actor, critic, reference, reward) and DeepSpeed engines.

* the policy's held-out reward rises clearly above the SFT policy's while the KL to the reference
  stays bounded, and every per-step metric and the sample tables reach MLflow; the reward is a
  user-written ``reward.functions`` file (no reward model), which reads record fields as grpo's do;
* a job resumed from a committed checkpoint, and a run whose critic actor dies mid-step and is
  recovered inside the job, both end with exactly the weights and metrics of an uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
from pathlib import Path

from tests.integration.rlhf_helpers import build_sft_policy, held_out_prompts, job_cfg

import pytest

pytestmark = pytest.mark.slow

USER_REWARD = '''
from orchestrator.data.task import TOPICS


def on_topic_share(prompts, completions, topic, k):
    """Share of on-topic words, from the records' topic and k fields (the fruit task's exact score)."""
    out = []
    for text, t, n in zip(completions, topic, k):
        words = text.lower().split()
        out.append(sum(w in TOPICS[t] for w in words) / max(len(words), n))
    return out
'''
PPO_METRICS = ("reward_mean", "reward/on_topic_share", "rule_score_mean", "pass_rate", "reward_std", "kl", "beta",
               "policy_loss", "value_loss", "clip_frac", "approx_kl", "entropy", "explained_variance", "response_length", "time_generate_s", "time_score_s", "time_train_s")


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "rlhf_shared"


@pytest.fixture(scope="module")
def sft_policy(ray_local, shared):
    return build_sft_policy(shared)[0]


def ppo_cfg(ws, run_name, policy, *extra):
    return job_cfg("ppo", ws, run_name, f"model.pretrained={policy}", "trainer.lr=2e-3", "ppo.rollout_batch_size=32",
                   "ppo.minibatch_size=16", "parallel.micro_batch_size=8", *extra)


def test_ppo_raises_reward_above_sft_with_bounded_kl(ray_local, sft_policy, shared, tmp_path):
    from mlflow import MlflowClient

    from orchestrator.rlhf.evaluate import mean_reward
    from orchestrator.kinds.ppo import run as run_ppo
    from orchestrator.training.loop import read_steps

    steps = 20
    reward_file = tmp_path / "user_rewards.py"
    reward_file.write_text(USER_REWARD)
    cfg = ppo_cfg(tmp_path, "ppo", sft_policy, f"trainer.max_steps={steps}", "trainer.save_every=0",
                  "ppo.sample_every=10", f"reward.functions=[{{function: '{reward_file}:on_topic_share'}}]")
    res = run_ppo(cfg)
    prompts = held_out_prompts()
    sft_score = mean_reward(sft_policy, prompts, seed=0)
    ppo_score = mean_reward(res["export_dir"], prompts, seed=0)
    print(f"held-out reward: SFT {sft_score:.3f} -> PPO {ppo_score:.3f}")
    assert ppo_score >= sft_score + 0.15 and ppo_score >= 0.8, (sft_score, ppo_score)

    per_step = read_steps(res["output_dir"])
    assert sorted(per_step) == list(range(1, steps + 1))
    rewards = [per_step[s]["reward_mean"] for s in sorted(per_step)]
    assert all(per_step[s]["reward_mean"] == per_step[s]["reward/on_topic_share"] for s in per_step)  # no model
    assert sum(rewards[-3:]) / 3 >= sum(rewards[:3]) / 3 + 0.1, rewards  # the function's reward rose in training
    kls = [per_step[s]["kl"] for s in per_step]
    assert all(math.isfinite(k) for k in kls) and max(kls) < 8.0, kls  # nats per response, vs the reference
    assert per_step[1]["kl"] == pytest.approx(0.0, abs=1e-4)  # step 1 samples from the reference itself

    client = MlflowClient(cfg.tracking.uri)
    run = client.get_run(res["run_id"])
    assert run.info.status == "FINISHED"
    for name in PPO_METRICS:
        assert len(client.get_metric_history(res["run_id"], name)) == steps, name
    assert run.data.tags["upstream.policy"] == sft_policy
    assert run.data.tags["upstream.reward_functions"] == f"{reward_file}:on_topic_share"
    samples = {a.path for a in client.list_artifacts(res["run_id"], "samples")}
    assert samples == {"samples/step_000010.json", "samples/step_000020.json"}

    # The job's start-up breakdown: in the result, startup.json and MLflow (step 0), the same numbers.
    startup = res["startup"]
    assert json.loads((Path(res["output_dir"]) / "startup.json").read_text()) == startup
    for key, value in startup.items():
        (point,) = client.get_metric_history(res["run_id"], key)
        assert point.step == 0 and point.value == pytest.approx(value), key
    phases = {k[len("startup."):-2]: v for k, v in startup.items() if k != "startup.to_first_step_s"}
    assert list(phases) == ["inputs", "ray_start", "prompts", "tracking_start", "roles_start", "first_step",
                            "checkpoint", "train_loop", "export", "teardown", "register"]  # the last step saves
    assert all(v >= 0 for v in phases.values()) and phases["roles_start"] > 0
    assert phases["first_step"] == pytest.approx(per_step[1]["step_time_s"], abs=1e-3)
    assert phases["first_step"] < phases["train_loop"]  # the loop holds all 20 steps
    assert startup["startup.to_first_step_s"] == pytest.approx(sum(
        phases[k] for k in ("inputs", "ray_start", "prompts", "tracking_start", "roles_start", "first_step")), abs=1e-2)


def test_ppo_resume_and_role_recovery_reproduce_uninterrupted_run(ray_local, sft_policy, tmp_path, caplog):
    from orchestrator.kinds.ppo import run as run_ppo
    from orchestrator.training.loop import read_steps

    common = ("trainer.max_steps=6", "trainer.save_every=3", "tracking.enabled=false", "ppo.kl_controller=adaptive",
              "ppo.kl_target=1.0", "ppo.kl_horizon=100")
    ref = run_ppo(ppo_cfg(tmp_path, "uninterrupted", sft_policy, *common))

    # a new job resuming from the uninterrupted run's committed step-3 checkpoint (as after a crash at step 4)
    ckpts = Path(tmp_path) / "resumed" / "checkpoints"
    ckpts.mkdir(parents=True)
    shutil.copytree(Path(ref["output_dir"]) / "checkpoints" / "step_00000003", ckpts / "step_00000003")
    (ckpts / "latest").write_text("step_00000003")
    resumed = run_ppo(ppo_cfg(tmp_path, "resumed", sft_policy, *common))
    assert resumed["steps"] == 6

    # the critic actor dies at step 5 and the job recovers the step from the last checkpoint by itself
    with caplog.at_level(logging.INFO, logger="orchestrator.rlhf.controller"):
        recovered = run_ppo(ppo_cfg(tmp_path, "recovered", sft_policy, *common, "trainer.fail_at_step=5",
                                    "trainer.max_failures=1"))
    assert recovered["failures_recovered"] == 1
    assert recovered["startup"]["startup.recovery_s"] > 0 and "startup.recovery_s" not in ref["startup"]
    assert "startup.restore_s" in resumed["startup"] and "startup.restore_s" not in ref["startup"]
    # only the critic's process was started again: the actor's (reference and reward inside it) served on
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("roles restarting")]
    kept = {role: [int(p) for p in pids.split()] for role, pids in re.findall(r"(\w+) \(pids ([\d ]+)\)", line)}
    assert list(kept) == ["actor"], line
    after = json.loads((Path(recovered["output_dir"]) / "placement.json").read_text())
    now = {p["pid"] for p in after}
    assert set(kept["actor"]) <= now and len(now - set(kept["actor"])) == 1, (after, line)  # one new process

    ref_steps = read_steps(ref["output_dir"])
    for other, first in ((resumed, 4), (recovered, 1)):
        assert other["actor_fingerprint"] == ref["actor_fingerprint"]
        got = read_steps(other["output_dir"])
        assert sorted(got) == list(range(first, 7))
        for step in range(first, 7):
            for key in ("reward_mean", "kl", "beta", "policy_loss", "value_loss"):
                assert got[step][key] == ref_steps[step][key], (step, key)
    assert ref_steps[6]["beta"] != ref_steps[1]["beta"]  # the adaptive controller's state was carried over


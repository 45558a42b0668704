"""``grpo`` on the demo task with real Ray roles (actor, reference, reward functions) and DeepSpeed engines.

* GRPO raises the SFT policy's held-out reward clearly while the KL to the reference stays bounded,
  and its per-step metrics reach MLflow;
* RLOO with the KL off (no reference role) and Dr.GRPO's aggregation runs, and a reward function that
  raises is counted under ``reward.on_error=zero`` ...
* ... and fails the step with an error naming it under the default ``reward.on_error=raise``;
* a job resumed from a committed checkpoint, and a run whose actor dies mid-step and is recovered inside
  the job, both end with exactly the weights and per-step metrics of an uninterrupted run (dynamic
  sampling on, so the refill rounds' prompt sampler is part of the state);
* on the arithmetic task (``data.task=arithmetic``, exact match on the final number), GRPO and RLOO each
  raise the held-out pass rate (``eval_pass_rate``, measured in the job on held-out records it never trains
  on, with fixed-seed samples; with 25 possible questions the same sums also occur in training, so this is
  the policy's pass rate, not generalisation) clearly above the SFT policy's (``initial_eval_pass_rate``,
  the same prompts and draws before the first update), with the KL to the SFT reference bounded.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

from tests.integration.rlhf_helpers import build_sft_policy, held_out_prompts, job_cfg

import pytest

pytestmark = pytest.mark.slow

GRPO_METRICS = ("reward_mean", "reward/fruit_reward", "pass_rate", "group_reward_std", "zero_std_group_fraction",
                "kl", "kl_loss", "clip_frac_low", "clip_frac_high", "entropy", "response_length",
                "truncation_rate", "time_generate_score_s", "time_train_s")
ARITHMETIC_SFT_STEPS, ARITHMETIC_GRPO_STEPS = 400, 50
FAILING_REWARDS = '''
def flaky_reward(prompts, completions, **fields):
    raise ValueError("boom")
'''


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "rlhf_shared"


@pytest.fixture(scope="module")
def sft_policy(ray_local, shared):
    return build_sft_policy(shared)[0]


@pytest.fixture(scope="module")
def arithmetic_sft_policy(ray_local, tmp_path_factory):
    """An SFT policy of the arithmetic task (its demonstrations are right half of the time), shared by the
    GRPO and RLOO runs (a workspace of its own: the session's fruit SFT policy lives in ``rlhf_shared``).
    A cosine schedule, not the fruit policy's constant LR: annealed, the tiny model makes the right sum its
    most likely answer for 92 % of the 25 prompts (23 of 25; constant LR: 40 %), with probability 0.33, so
    GRPO sharpens an answer the policy already favours instead of learning the sums."""
    return build_sft_policy(tmp_path_factory.getbasetemp() / "rlhf_arithmetic", "data.task=arithmetic",
                            "optim=adamw_cosine", f"trainer.max_steps={ARITHMETIC_SFT_STEPS}")[0]


def grpo_cfg(ws, run_name, policy, *extra):
    return job_cfg("grpo", ws, run_name, f"model.pretrained={policy}", "trainer.lr=2e-3", "grpo.rollout_batch_size=8",
                   "grpo.group_size=8", "grpo.minibatch_size=32", "parallel.micro_batch_size=16",
                   "grpo.num_eval_prompts=0", *extra)


def test_grpo_raises_reward_above_sft_with_bounded_kl(ray_local, sft_policy, tmp_path):
    from mlflow import MlflowClient

    from orchestrator.kinds.grpo import run as run_grpo
    from orchestrator.rlhf.evaluate import mean_reward
    from orchestrator.training.loop import read_steps

    steps = 15
    cfg = grpo_cfg(tmp_path, "grpo", sft_policy, f"trainer.max_steps={steps}", "trainer.save_every=0",
                   "grpo.sample_every=10", "grpo.num_eval_prompts=16", "grpo.eval_samples_per_prompt=2")
    res = run_grpo(cfg)
    prompts = held_out_prompts()
    sft_score = mean_reward(sft_policy, prompts, seed=0)
    grpo_score = mean_reward(res["export_dir"], prompts, seed=0)
    print(f"held-out reward: SFT {sft_score:.3f} -> GRPO {grpo_score:.3f}")
    assert grpo_score >= sft_score + 0.1, (sft_score, grpo_score)

    per_step = read_steps(res["output_dir"])
    assert sorted(per_step) == list(range(1, steps + 1))
    kls = [per_step[s]["kl"] for s in per_step]
    assert all(math.isfinite(k) for k in kls) and max(kls) < 8.0, kls  # nats per response, vs the reference
    assert per_step[1]["kl"] == pytest.approx(0.0, abs=1e-4)  # step 1 samples from the reference itself

    client = MlflowClient(cfg.tracking.uri)
    assert client.get_run(res["run_id"]).info.status == "FINISHED"
    for name in GRPO_METRICS:
        assert len(client.get_metric_history(res["run_id"], name)) == steps, name
    for name, at in (("initial_eval_pass_rate", 1), ("eval_pass_rate", steps), ("eval_reward_mean", steps)):
        assert [m.step for m in client.get_metric_history(res["run_id"], name)] == [at], name
    samples = {a.path for a in client.list_artifacts(res["run_id"], "samples")}
    assert samples == {"samples/step_000010.json", "samples/step_000015.json"}
    startup = res["startup"]  # the RL start-up breakdown (PPO's test checks it in full)
    assert [m.step for m in client.get_metric_history(res["run_id"], "startup.roles_start_s")] == [0]
    assert startup["startup.first_step_s"] == pytest.approx(per_step[1]["step_time_s"], abs=1e-3)
    assert 0 < startup["startup.roles_start_s"] < startup["startup.to_first_step_s"]


def test_rloo_without_kl_runs_and_counts_failing_function_under_on_error_zero(ray_local, sft_policy, tmp_path):
    from orchestrator.kinds.grpo import run as run_grpo
    from orchestrator.training.loop import read_steps

    rewards = tmp_path / "failing_rewards.py"
    rewards.write_text(FAILING_REWARDS)
    functions = (f"reward.functions=[{{function: 'orchestrator.rlhf.reward_functions:fruit_reward'}},"
                 f"{{function: '{rewards}:flaky_reward', weight: 0.5}}]")
    res = run_grpo(grpo_cfg(tmp_path, "rloo", sft_policy, "trainer.max_steps=2", "trainer.save_every=0",
                            "tracking.enabled=false", "grpo.advantage=rloo", "grpo.kl_coef=0",
                            "grpo.loss_agg=seq_mean_token_sum_norm", "reward.on_error=zero", functions))
    per_step = read_steps(res["output_dir"])
    assert sorted(per_step) == [1, 2]
    for m in per_step.values():
        assert m["reward_errors/flaky_reward"] == 64.0 and m["reward/flaky_reward"] == 0.0
        assert m["reward_mean"] == pytest.approx(m["reward/fruit_reward"])
        assert "kl" not in m and "kl_loss" not in m  # no reference role, no KL term
        assert math.isfinite(m["policy_loss"]) and m["actor_grad_norm"] > 0


def test_reward_function_that_raises_fails_the_step_naming_it(ray_local, sft_policy, tmp_path):
    from orchestrator.kinds.grpo import run as run_grpo
    from orchestrator.rlhf.rewards import RewardFunctionError

    rewards = tmp_path / "failing_rewards.py"
    rewards.write_text(FAILING_REWARDS)
    cfg = grpo_cfg(tmp_path, "raises", sft_policy, "trainer.max_steps=1", "tracking.enabled=false",
                   f"reward.functions=[{{function: '{rewards}:flaky_reward'}}]")
    with pytest.raises(RewardFunctionError, match=r"flaky_reward.*ValueError: boom"):
        run_grpo(cfg)


def test_grpo_resume_and_actor_recovery_reproduce_uninterrupted_run(ray_local, sft_policy, tmp_path):
    from orchestrator.kinds.grpo import run as run_grpo
    from orchestrator.training.loop import read_steps

    common = ("trainer.max_steps=4", "trainer.save_every=2", "tracking.enabled=false", "grpo.rollout_batch_size=4",
              "grpo.minibatch_size=16", "grpo.dynamic_sampling=true", "grpo.max_refills=1")
    ref = run_grpo(grpo_cfg(tmp_path, "uninterrupted", sft_policy, *common))

    # a new job resuming from the uninterrupted run's committed step-2 checkpoint (as after a crash at step 3)
    ckpts = Path(tmp_path) / "resumed" / "checkpoints"
    ckpts.mkdir(parents=True)
    shutil.copytree(Path(ref["output_dir"]) / "checkpoints" / "step_00000002", ckpts / "step_00000002")
    (ckpts / "latest").write_text("step_00000002")
    resumed = run_grpo(grpo_cfg(tmp_path, "resumed", sft_policy, *common))
    assert resumed["steps"] == 4

    # the actor dies at step 3 and the job recovers the step from the last checkpoint by itself
    recovered = run_grpo(grpo_cfg(tmp_path, "recovered", sft_policy, *common, "trainer.fail_at_step=3",
                                  "trainer.max_failures=1"))
    assert recovered["failures_recovered"] == 1

    ref_steps = read_steps(ref["output_dir"])
    assert all(ref_steps[s]["groups_generated"] >= 4 for s in ref_steps)  # dynamic sampling ran
    for other, first in ((resumed, 3), (recovered, 1)):
        assert other["actor_fingerprint"] == ref["actor_fingerprint"]
        got = read_steps(other["output_dir"])
        assert sorted(got) == list(range(first, 5))
        for step in range(first, 5):
            for key in ("reward_mean", "kl", "policy_loss", "kl_loss", "groups_generated", "entropy"):
                assert got[step][key] == ref_steps[step][key], (step, key)


@pytest.mark.parametrize("advantage", ["grpo", "rloo"])
def test_grpo_and_rloo_raise_held_out_arithmetic_pass_rate_above_sft(ray_local, arithmetic_sft_policy, tmp_path,
                                                                     advantage):
    from orchestrator.kinds.grpo import run as run_grpo
    from orchestrator.training.loop import read_steps

    steps = ARITHMETIC_GRPO_STEPS
    res = run_grpo(grpo_cfg(
        tmp_path, advantage, arithmetic_sft_policy, f"trainer.max_steps={steps}", "trainer.save_every=0",
        "tracking.enabled=false", "trainer.export=false", "data.task=arithmetic", f"grpo.advantage={advantage}",
        "reward.functions=[{function: 'orchestrator.rlhf.reward_functions:arithmetic_reward'}]",
        "grpo.max_new_tokens=6", "grpo.num_eval_prompts=64", "grpo.eval_samples_per_prompt=4"))
    per_step = read_steps(res["output_dir"])
    sft_rate, final_rate = per_step[1]["initial_eval_pass_rate"], per_step[steps]["eval_pass_rate"]
    print(f"held-out arithmetic pass rate ({advantage}): SFT {sft_rate:.3f} -> {final_rate:.3f}")
    # measured (2 cores, seed 0 as here): SFT 0.352 -> GRPO 0.508, RLOO 0.480 after 50 steps; seed 1 (SFT and
    # GRPO): 0.324 -> 0.547, 0.535. Sampling noise of one 256-completion evaluation is about 0.03
    assert final_rate >= sft_rate + 0.1, (sft_rate, final_rate)
    kls = [per_step[s]["kl"] for s in sorted(per_step)]
    assert all(math.isfinite(k) for k in kls), kls
    assert per_step[1]["kl"] == pytest.approx(0.0, abs=1e-4)  # step 1 samples from the reference itself
    # bounded: the KL of the last 10 steps (nats per response, vs the SFT reference; measured 0.41-0.86 over
    # both seeds). Not the max over steps: k3 on one step's 64 samples spikes when a sample is much likelier
    # under the reference (measured 1.6-9.2 at one step near step 10, back under 1 in the next steps)
    assert sum(kls[-10:]) / 10 < 2.0, kls

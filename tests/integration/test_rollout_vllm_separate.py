"""``rollout.layout=separate``: the vLLM engines as their own role group, fed by a broadcast from actor rank 0.

Same claims as the colocated engine (tests/integration/test_rollout_vllm.py, same tolerance and its reason
there: fp32 on CPU, kernels and reduction order only), now across processes: the engine role's log-probs of
the tokens it sampled equal the actor role's forward before any update and after each of K synced updates;
a rollout after a skipped sync raises the version check's error; and grpo runs end to end with the engines
in their own placement group, through the loss and recovery of an engine.
"""

from __future__ import annotations

import os

import pytest

from tests.integration.test_rollout_vllm import K_UPDATES, TOL, _assert_synced_every_step, _prompts

pytestmark = pytest.mark.slow
if os.environ.get("ORCHESTRATOR_REQUIRE_VLLM") != "1":
    pytest.importorskip("vllm", reason="vllm not installed (make setup installs it: pip install -e '.[vllm]')")


def _start(cfg, model_dir: str, env: dict):
    """The controllers' driver side (:class:`EngineRollouts`) over one actor rank and the engine role group."""
    import ray

    from orchestrator.rlhf.engine_client import EngineRollouts
    from orchestrator.rlhf.placement import RoleGroup, create_placement_group
    from orchestrator.rlhf.roles import PolicyRole

    class Driver(EngineRollouts):
        pass

    d = Driver()
    d.cfg, d.policy_dir, d.env, d.extra_pgs = cfg, model_dir, env, []
    pg, index = create_placement_group(cfg.ppo, ("actor",))
    d.pgs = [pg]
    d.groups = {"actor": RoleGroup("actor", PolicyRole, cfg.ppo.actor, pg, index["actor"],
                                   lambda r, n, m: ((cfg, model_dir, True, K_UPDATES), dict(rank=r, world_size=n, master=m)),
                                   env)}
    d.groups.update(d.start_extra_groups())
    ray.get([f for g in d.groups.values() for f in g.ready()])
    d.connect_engines()
    return d


def _gap(d, prompts, out):
    """Max |engine - actor| log-prob over the response tokens of ``out`` (the engines' rows, in order), and the
    sequence batch of ``out``."""
    import ray

    from orchestrator.rlhf.rollout import pad_right, sequence_batch

    responses, logprobs = out
    batch = sequence_batch(prompts["input_ids"], prompts["attention_mask"], responses, 2, 0)
    actor = ray.get(d.groups["actor"].workers[0].logprobs.remote(batch))
    engine = pad_right(logprobs, 0.0)
    mask = batch["response_mask"].bool()
    return float((actor - engine[:, :actor.shape[1]]).abs()[mask].max()), batch


def test_separate_engines_match_the_actor_before_and_after_broadcast_syncs_and_refuse_a_skipped_sync(
        ray_local, tmp_path):
    """Two engines (each its own bundle and process) and one actor rank: parity before any update and after K
    synced updates (each a gloo broadcast from the actor), the versions on both sides, and a skipped sync."""
    import ray
    import torch
    from ray.util.placement_group import remove_placement_group

    from orchestrator.config.model import ModelConfig
    from orchestrator.kinds import load
    from orchestrator.models.build import build_causal_lm
    from orchestrator.rlhf.rollout_engines import StaleRolloutEngineError
    from orchestrator.runtime.ray_runtime import worker_env

    model_dir = str(tmp_path / "policy")
    build_causal_lm(ModelConfig(num_heads=2, vocab_size=320, seq_len=32), 0,
                    special_ids={"pad_token_id": 0, "eos_token_id": 2}).save_pretrained(model_dir)
    cfg = load("ppo", ["model=tiny_h32", "model.vocab_size=320", "model.seq_len=32", "rollout.engine=vllm",
                       "rollout.layout=separate", "rollout.num_engines=2", "rollout.cpus_per_engine=0.5",
                       "cluster.num_cpus=2", "ppo.rollout_batch_size=8", "ppo.minibatch_size=8",
                       "parallel.micro_batch_size=8", "ppo.max_new_tokens=10", "trainer.lr=1e-2",
                       "optim=adamw_constant"])
    d = _start(cfg, model_dir, worker_env(cfg.cluster))
    actor = d.groups["actor"].workers[0]
    try:
        prompts = _prompts(8, 6, 0)
        gaps = [_gap(d, prompts, d.rollout_responses(prompts, 1, 2, 0))[0]]
        drift, stale = [], {}
        for k in range(K_UPDATES):
            batch = _gap(d, prompts, d.rollout_responses(prompts, 10 + k, 2, 0))[1]
            before = ray.get(actor.logprobs.remote(batch))
            adv = torch.randn(before.shape, generator=torch.Generator().manual_seed(k))
            ray.get(actor.train_minibatch.remote(dict(batch, old_logprobs=before, advantages=adv),
                                                 float(batch["response_mask"].sum())))
            drift.append(float((ray.get(actor.logprobs.remote(batch)) - before).abs()[batch["response_mask"].bool()].max()))
            if k == 0:  # a skipped sync: every engine refuses to sample; what it would have sampled is stale
                with pytest.raises(StaleRolloutEngineError) as info:
                    d.rollout_responses(prompts, 1, 2, 0)
                stale["msg"] = str(info.value)
                outs = ray.get([w.rollout.remote(prompts, 1, 2, 0, 0) for w in d.groups["rollout"].workers[:1]])
                stale["gap"] = _gap(d, prompts, (outs[0]["responses"], [outs[0]["logprobs"]]))[0]
            d.sync_rollout_engines()
            gaps.append(_gap(d, prompts, d.rollout_responses(prompts, 1, 2, 0))[0])
        versions = ray.get(d.groups["rollout"].call("version")), d.actor_version()
    finally:
        for g in d.groups.values():
            g.kill()
        for pg in d.pgs + d.extra_pgs:
            remove_placement_group(pg)
    print({"gaps": gaps, "drift": drift, "stale": stale, "versions": versions})
    assert len(gaps) == K_UPDATES + 1 and max(gaps) < TOL, gaps  # before any update and after each synced one
    assert min(drift) > 100 * TOL, drift  # each update moved the policy far beyond the tolerance
    assert "version 0" in stale["msg"] and "version 1" in stale["msg"], stale["msg"]
    assert stale["gap"] > 100 * TOL, stale  # what the check prevents
    assert versions == ([K_UPDATES, K_UPDATES], K_UPDATES)


@pytest.fixture(scope="module")
def h32_policy(ray_local, tmp_path_factory):
    """The session's SFT policy of ``tiny_h32`` (shared on disk with test_rollout_vllm.py's fixture)."""
    from tests.integration.rlhf_helpers import build_sft_policy

    return build_sft_policy(tmp_path_factory.getbasetemp() / "rlhf_shared_h32", "model=tiny_h32")[0]


def test_grpo_with_separate_vllm_engines_raises_reward_syncs_every_step_and_recovers_a_killed_engine(
        ray_local, h32_policy, tmp_path, monkeypatch):
    """GRPO end to end with one engine in its own placement group: the held-out reward rises above the SFT
    policy's as with the colocated engine (same margin), and every step's engine held the actor's current
    weights (mismatch at fp32 rounding, so each step's broadcast arrived whole). The engine's process is
    killed at step 7: the controller restarts every role, the new engine joins a new broadcast group and is
    synced to the step-6 checkpoint (a load moves the actor's version, so an unsynced engine would raise),
    and step 7 is recomputed with the same small mismatch."""
    from orchestrator.kinds.grpo import run as run_grpo
    from orchestrator.rlhf.grpo import GRPOController

    monkeypatch.setattr(GRPOController, "fault_role", "rollout")  # trainer.fail_at_step kills the engine
    from orchestrator.rlhf.evaluate import mean_reward
    from orchestrator.training.loop import read_steps
    from tests.integration.rlhf_helpers import held_out_prompts, job_cfg

    steps = 12
    cfg = job_cfg("grpo", tmp_path, "grpo_vllm_sep", f"model.pretrained={h32_policy}", "model=tiny_h32",
                  "trainer.lr=2e-3", "grpo.rollout_batch_size=8", "grpo.group_size=8", "grpo.minibatch_size=32",
                  "parallel.micro_batch_size=16", f"trainer.max_steps={steps}", "trainer.save_every=6",
                  "trainer.fail_at_step=7", "trainer.max_failures=1", "grpo.sample_every=12",
                  "rollout.engine=vllm", "rollout.layout=separate", "rollout.tis_cap=2.0")
    res = run_grpo(cfg)
    assert res["failures_recovered"] == 1 and res["steps"] == steps, res
    prompts = held_out_prompts()
    sft_score, grpo_score = mean_reward(h32_policy, prompts, seed=0), mean_reward(res["export_dir"], prompts, seed=0)
    print(f"held-out reward (separate vllm engines): SFT {sft_score:.3f} -> GRPO {grpo_score:.3f}")
    assert grpo_score >= sft_score + 0.1, (sft_score, grpo_score)
    _assert_synced_every_step(read_steps(res["output_dir"]), steps)

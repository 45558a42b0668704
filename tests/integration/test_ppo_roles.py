"""A trained PPO role split over 2 data-parallel ranks takes exactly the single-rank step.

Each rank trains on its half of a minibatch with the loss normalised by the token count of the *whole*
minibatch; DeepSpeed averages gradients over ranks, which the role compensates for. The gradient norm
and loss must therefore equal the single-process values (a factor-of-world-size mistake would show
here even though Adam's first step hides gradient scale in the weights).
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def synthetic_minibatch(B: int = 8, P: int = 4, R: int = 5, seed: int = 0) -> dict:
    import torch

    from orchestrator.rlhf.rollout import position_ids

    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, R + 1, (B,), generator=g)
    rmask = (torch.arange(R)[None] < lengths[:, None]).float()
    att = torch.cat([torch.ones(B, P, dtype=torch.long), rmask.long()], dim=1)
    return {"input_ids": torch.randint(3, 300, (B, P + R), generator=g), "attention_mask": att,
            "position_ids": position_ids(att), "response_mask": rmask, "prompt_len": P,
            "old_logprobs": -5.0 + 0.1 * torch.randn(B, R, generator=g), "advantages": torch.randn(B, R, generator=g)}


def run_groups(worlds: tuple[int, ...], model_dir: str) -> dict[int, list]:
    """One actor role group per world size on the session's Ray, all at the same time, each rank training on its
    shard of one minibatch: {world: [(rank, stats, fingerprint)]}. The ranks live in warm hosts (processes that
    earlier PPO jobs of the session left with the stack imported), as in a PPO job; new processes would spend
    most of the test importing it."""
    import ray

    from orchestrator.kinds import load
    from orchestrator.rlhf.placement import RoleGroup, create_placement_group
    from orchestrator.rlhf.roles import PolicyRole
    from orchestrator.rlhf.rollout import shard_rows
    from orchestrator.runtime.ray_runtime import worker_env
    from ray.util.placement_group import remove_placement_group

    mb = synthetic_minibatch()
    num_tokens = float(mb["response_mask"].sum())
    groups, pgs = {}, []
    try:
        for world in worlds:
            cfg = load("ppo", ["ppo.rollout_batch_size=8", "ppo.minibatch_size=8", "parallel.micro_batch_size=2",
                               f"ppo.actor.num_workers={world}", "ppo.entropy_coef=0.01", "cluster.num_cpus=2"])
            pg, index = create_placement_group(cfg.ppo, ("actor",))
            pgs.append(pg)
            groups[world] = RoleGroup("actor", PolicyRole, cfg.ppo.actor, pg, index["actor"],
                                      lambda r, n, m, cfg=cfg: ((cfg, model_dir, True),
                                                                dict(total_updates=2, rank=r, world_size=n, master=m)),
                                      worker_env(cfg.cluster))
        ray.get([f for g in groups.values() for f in g.ready()])
        stats = {w: g.call_sharded("train_minibatch", shard_rows(mb, w), num_tokens) for w, g in groups.items()}
        out = {w: list(zip(range(w), ray.get(stats[w]), ray.get(g.call("state_fingerprint"))))
               for w, g in groups.items()}
        for g in groups.values():
            g.give_back()
        return out
    except BaseException:
        for g in groups.values():
            g.kill()
        raise
    finally:
        for pg in pgs:
            remove_placement_group(pg)


def test_two_rank_actor_step_equals_single_rank_step(ray_local, tmp_path):
    from orchestrator.config.model import ModelConfig
    from orchestrator.models.build import build_causal_lm

    model_dir = str(tmp_path / "policy")
    build_causal_lm(ModelConfig(vocab_size=320, seq_len=16), 0,
                    special_ids={"pad_token_id": 0, "eos_token_id": 2}).save_pretrained(model_dir)
    groups = run_groups((1, 2), model_dir)
    (_, single, fp_single), = groups[1]
    pair = groups[2]
    summed = {k: sum(stats[k] for _, stats, _ in pair) for k in single}
    for key in ("policy_loss", "entropy", "clip_frac", "approx_kl", "actor_grad_norm"):
        assert summed[key] == pytest.approx(single[key], rel=1e-5, abs=1e-7), key
    assert single["actor_grad_norm"] > 0
    for _, _, fp in pair:  # both ranks hold the same weights, equal to the single-rank step's
        assert fp == pytest.approx(fp_single, rel=1e-7)

"""The dry-run plan of a PPO job: role layout, placement bundles and the update arithmetic (pure)."""

from __future__ import annotations

from typing import Any

from orchestrator.rlhf.placement import ROLES, bundles_for, pg_strategy


def ppo_plan(cfg: Any) -> dict[str, Any]:
    p = cfg.ppo
    bundles, index = bundles_for(p)
    minibatches = p.rollout_batch_size // p.minibatch_size
    return {
        "roles": {r: {"num_workers": getattr(p, r).num_workers, "num_cpus": getattr(p, r).num_cpus,
                      "num_gpus": getattr(p, r).num_gpus, "bundles": index[r]} for r in ROLES},
        "placement_strategy": pg_strategy(p.colocate, cfg.cluster.placement),
        "placement_bundles": bundles,
        "samples_per_step": p.rollout_batch_size,
        "optimizer_steps_per_ppo_step": p.ppo_epochs * minibatches,
        "grad_accum_steps": {r: p.minibatch_size // (cfg.parallel.micro_batch_size * getattr(p, r).num_workers)
                             for r in ("actor", "critic")},
        "total_optimizer_steps": cfg.trainer.max_steps * p.ppo_epochs * minibatches,
        "reward": p.reward_model or f"rule {p.reward_fn}",
        "kl": f"{p.kl_kind}, {p.kl_controller} beta={p.kl_coef}",
    }

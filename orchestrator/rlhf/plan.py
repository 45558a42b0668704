"""The dry-run plans of the RL kinds (ppo, grpo): role layout, placement bundles and the update arithmetic (pure)."""

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
        "reward": p.reward_model or [f"{f.metric_name}={f.weight:g} x {f.function}" for f in cfg.reward.functions],
        "kl": f"{p.kl_kind}, {p.kl_controller} beta={p.kl_coef}",
        **engines_plan(cfg),
    }


def engines_plan(cfg: Any) -> dict[str, Any]:
    """The separate rollout engines' group (``rollout.layout=separate``), or nothing."""
    r = getattr(cfg, "rollout", None)
    if r is None or r.engine != "vllm" or r.layout != "separate":
        return {}
    bundle = {"CPU": float(r.cpus_per_engine), **({"GPU": float(r.gpus_per_engine)} if cfg.cluster.use_gpu else {})}
    return {"rollout_engines": {"num_engines": r.num_engines, "placement_bundles": [bundle] * r.num_engines,
                                "weight_sync": "broadcast from actor rank 0 (" + (
                                    "nccl" if cfg.cluster.use_gpu else "gloo") + ") after every update"}}


def grpo_roles(p: Any) -> tuple[str, ...]:
    """The roles a ``grpo`` job starts: no critic, and no reference when the KL is off (``kl_coef`` 0)."""
    return ("actor", "reference", "reward") if p.kl_coef > 0 else ("actor", "reward")


def grpo_plan(cfg: Any) -> dict[str, Any]:
    p = cfg.grpo
    roles = grpo_roles(p)
    bundles, index = bundles_for(p, roles)
    completions = p.rollout_batch_size * p.group_size
    minibatches = completions // p.minibatch_size
    r = cfg.reward
    reward = [f"{f.metric_name}={f.weight:g} x {f.function}" for f in r.functions]
    if r.model:
        reward.append(f"model={r.model_weight:g} x {r.model}")
    return {
        "roles": {name: {"num_workers": getattr(p, name).num_workers, "num_cpus": getattr(p, name).num_cpus,
                         "num_gpus": getattr(p, name).num_gpus, "bundles": index[name]} for name in roles},
        "placement_strategy": pg_strategy(p.colocate, cfg.cluster.placement),
        "placement_bundles": bundles,
        "prompts_per_step": p.rollout_batch_size,
        "samples_per_step": completions,
        "generation_rounds_per_step": f"1..{p.max_refills + 1} (dynamic sampling)" if p.dynamic_sampling else 1,
        "optimizer_steps_per_step": p.num_epochs * minibatches,
        "grad_accum_steps": p.minibatch_size // (cfg.parallel.micro_batch_size * p.actor.num_workers),
        "total_optimizer_steps": cfg.trainer.max_steps * p.num_epochs * minibatches,
        "advantage": p.advantage, "loss_agg": p.loss_agg,
        "clip": f"[1-{p.clip_low:g}, 1+{p.clip_high:g}]",
        "kl": "off (no reference role)" if not p.kl_coef else f"{p.kl_kind} in the {p.kl_mode}, beta={p.kl_coef:g}",
        "reward": reward, "reward_on_error": r.on_error,
        **engines_plan(cfg),
    }

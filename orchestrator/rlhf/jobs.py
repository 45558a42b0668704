"""Library entry points of the ``ppo`` and ``dpo`` job kinds (see ``orchestrator.entry.RUNNERS``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from orchestrator.config.errors import ConfigError
from orchestrator.config.jobs import DPOConfig, PPOConfig

log = logging.getLogger(__name__)


def check_ppo(cfg: PPOConfig) -> None:
    """PPO-specific checks that need no Ray (the generic ones ran in ``validate``)."""
    p = cfg.ppo
    if cfg.parallel.tensor_parallel > 1 or cfg.parallel.pipeline_parallel > 1 or cfg.parallel.zero_stage == 3:
        raise ConfigError("parallel", "PPO roles generate with the HF model, which needs whole (not TP/PP/ZeRO-3 "
                          "partitioned) weights in each actor", "use parallel=zero0, zero1 or zero2 for ppo")
    for role in ("actor", "critic"):
        n = getattr(p, role).num_workers
        if p.minibatch_size % (cfg.parallel.micro_batch_size * n):
            raise ConfigError("ppo.minibatch_size", f"{p.minibatch_size} is not divisible by parallel.micro_batch_size"
                              f" * ppo.{role}.num_workers = {cfg.parallel.micro_batch_size * n}",
                              "pick a minibatch size divisible by micro_batch_size times the role size")
    if cfg.model.seq_len <= p.max_new_tokens:
        raise ConfigError("ppo.max_new_tokens", f"{p.max_new_tokens} leaves no room for the prompt in "
                          f"model.seq_len={cfg.model.seq_len}", "lower ppo.max_new_tokens or raise model.seq_len")


def run_ppo(cfg: PPOConfig) -> dict[str, Any]:
    """RLHF with PPO: actor, critic, reference and reward as Ray roles. Returns run id, output/export
    dirs and the final step's metrics (reward, KL, losses)."""
    from orchestrator.data.shards import read_records
    from orchestrator.rlhf import common
    from orchestrator.rlhf.ppo import PPOController
    from orchestrator.runtime.ray_runtime import ray_session, worker_env

    check_ppo(cfg)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    policy = common.resolve_model(cfg.model.pretrained, cfg, "model.pretrained")
    reward = common.resolve_model(cfg.ppo.reward_model, cfg, "ppo.reward_model")
    critic = common.resolve_model(cfg.ppo.critic_init, cfg, "ppo.critic_init") or reward or policy
    data = common.dataset_dir(cfg, "prompts", policy if common.has_tokenizer(policy) else None)
    tokenizer = common.pick_tokenizer(policy, data)
    if policy is None:
        log.warning("model.pretrained is null: PPO starts from a randomly initialised policy (smoke run only)")
        policy = common.init_policy_dir(cfg, tokenizer)
        critic = critic or policy
    prompts = [r["prompt"] for r in read_records(data)]
    with common.job_tracker(cfg) as tracker, ray_session(cfg.cluster):
        tags = common.lineage_tags(cfg, policy=cfg.model.pretrained, reward_model=cfg.ppo.reward_model,
                                   reward_fn=None if cfg.ppo.reward_model else cfg.ppo.reward_fn, dataset=str(data))
        tracker.set_tags(tags)
        tracker.log_dataset(data, "train")
        env = worker_env(cfg.cluster)
        ctl = PPOController(cfg, policy_dir=policy, critic_dir=critic or policy, reward_dir=reward,
                            tokenizer_dir=tokenizer, prompts=prompts, tracker=tracker, env=env)
        try:
            summary = ctl.run()
            export_dir = ctl.export(out / "export") if cfg.trainer.export else None
            fingerprint = ctl.fingerprints()["actor"]
        finally:
            ctl.stop_roles()
        version = common.finish_export(tracker, cfg, export_dir, tags) if export_dir else None
        return {"run_id": tracker.run_id, "output_dir": str(out), "export_dir": str(export_dir) if export_dir else None,
                "model_version": version, "model_name": cfg.run_name if version else None,
                "actor_fingerprint": fingerprint, "metrics": summary["last_metrics"],
                "final_reward_mean": summary["last_metrics"].get("reward_mean"), **summary}


def run_dpo(cfg: DPOConfig) -> dict[str, Any]:
    """Direct preference optimisation against a frozen reference (see :mod:`orchestrator.rlhf.dpo`)."""
    from orchestrator.rlhf.dpo import run_dpo_job

    return run_dpo_job(cfg)

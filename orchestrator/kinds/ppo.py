"""``ppo``: RLHF with PPO; actor, critic, reference and reward as Ray role actors in one placement group.

The controller is :class:`orchestrator.rlhf.ppo.PPOController`; the math is in
``orchestrator/rlhf/{advantages,losses,kl}.py``; every default and its reason is in
``orchestrator/config/rlhf.py``. Reads ``data.path`` of format ``prompts`` (or sft/preference records'
prompts; the generated ``data.task`` when null); takes ``model.pretrained`` and ``ppo.reward_model`` from
upstream stages; output ``model`` (the actor's export). The reward is the reward model's score, or,
without one, ``reward.functions``: the same Python reward functions as ``grpo``, run by the same
reward role (:class:`orchestrator.rlhf.grpo_roles.RewardFunctionRole`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from orchestrator.config.errors import ConfigError
from orchestrator.config.jobs import TrainJobConfig
from orchestrator.config.rlhf import PPOOptions, RewardFunctionsConfig
from orchestrator.config.rollout import RolloutConfig, check_rollout, rollout_tags
from orchestrator.core.timing import Phases
from orchestrator.kinds.registry import KindSpec, model_output
from orchestrator.rlhf.placement import ROLES, check_placement, check_storage
from orchestrator.rlhf.plan import ppo_plan
from orchestrator.rlhf.rewards import check_reward_functions

log = logging.getLogger(__name__)


@dataclass
class PPOConfig(TrainJobConfig):
    kind: str = "ppo"
    ppo: PPOOptions = field(default_factory=PPOOptions)
    """PPO options."""
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    """Generation engine of the rollouts (``rollout.engine=hf|vllm``), weight sync and mismatch correction."""
    reward: RewardFunctionsConfig = field(default_factory=RewardFunctionsConfig)
    """Reward functions: the reward when ``ppo.reward_model`` is null, else computed for monitoring only."""


def check(cfg: PPOConfig) -> None:
    """PPO-specific checks (the generic ones ran before)."""
    p = cfg.ppo
    if cfg.parallel.zero_stage == 3:
        raise ConfigError("parallel.zero_stage", "PPO roles generate with the HF model, which needs whole (not "
                          "ZeRO-3 partitioned) weights in each actor", "use parallel=zero0, zero1 or zero2 for ppo")
    for role in ("actor", "critic"):
        n = getattr(p, role).num_workers
        if p.minibatch_size % (cfg.parallel.micro_batch_size * n):
            raise ConfigError("ppo.minibatch_size", f"{p.minibatch_size} is not divisible by parallel.micro_batch_size"
                              f" * ppo.{role}.num_workers = {cfg.parallel.micro_batch_size * n}",
                              "pick a minibatch size divisible by micro_batch_size times the role size")
    check_rollout(cfg, [getattr(cfg.ppo, r) for r in ROLES])
    check_placement(p.colocate, cfg.cluster.placement, "ppo")
    check_storage(cfg.cluster.storage_path, "ppo")
    if cfg.model.seq_len <= p.max_new_tokens:
        raise ConfigError("ppo.max_new_tokens", f"{p.max_new_tokens} leaves no room for the prompt in "
                          f"model.seq_len={cfg.model.seq_len}", "lower ppo.max_new_tokens or raise model.seq_len")
    if p.reward_model is None and not cfg.reward.functions:
        raise ConfigError("reward.functions", "no reward: no functions and no ppo.reward_model",
                          "list at least one reward function (e.g. 'reward.functions=[{function: "
                          "orchestrator.rlhf.reward_functions:arithmetic_reward}]') or set ppo.reward_model")
    check_reward_functions(cfg.reward.functions)


def plan(cfg: PPOConfig) -> dict[str, Any]:
    return {"model_params": cfg.model.num_params(), **ppo_plan(cfg)}


def run(cfg: PPOConfig) -> Mapping[str, Any]:
    """Returns run id, output/export dirs, the registered version and the final step's metrics."""
    from orchestrator.core.files import has_tokenizer
    from orchestrator.data.shards import read_records
    from orchestrator.rlhf.placement import ROLE_PRELOAD, prewarm_role_hosts
    from orchestrator.runtime.ray_runtime import ray_session, worker_env
    from orchestrator.tracking import job_run, lineage_tags
    from orchestrator.training.inputs import dataset_dir, init_model_dir, pick_tokenizer, resolve_model

    phases = Phases()
    t_inputs = time.perf_counter()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    policy = resolve_model(cfg.model.pretrained, cfg, "model.pretrained")
    reward = resolve_model(cfg.ppo.reward_model, cfg, "ppo.reward_model")
    critic = resolve_model(cfg.ppo.critic_init, cfg, "ppo.critic_init") or reward or policy
    data = dataset_dir(cfg, "prompts", policy if has_tokenizer(policy) else None)
    tokenizer = pick_tokenizer(policy, data)
    if policy is None:
        log.warning("model.pretrained is null: PPO starts from a randomly initialised policy (smoke run only)")
        policy = init_model_dir(cfg, tokenizer)
        critic = critic or policy
    functions = ",".join(f.function for f in cfg.reward.functions) or None
    tags = lineage_tags(policy=cfg.model.pretrained, reward_model=cfg.ppo.reward_model, dataset=str(data),
                        reward_functions=None if cfg.ppo.reward_model else functions)
    tags.update(rollout_tags(cfg))
    env = worker_env(cfg.cluster)
    phases.add("inputs", time.perf_counter() - t_inputs)
    with contextlib.ExitStack() as stack:
        with phases.phase("ray_start"):
            stack.enter_context(ray_session(cfg.cluster, preload=ROLE_PRELOAD))
            # the role processes start importing now, while the prompts are tokenized and the MLflow run opens
            prewarm_role_hosts(cfg.ppo, ROLES, ("actor", "critic"), cfg.cluster, env)
        with phases.phase("prompts"):
            from orchestrator.data.tokenizer import load_tokenizer
            from orchestrator.rlhf.chat_prompts import generation_stop_ids, rollout_records
            from orchestrator.rlhf.controller import run_roles_and_export
            from orchestrator.rlhf.ppo import PPOController

            tok = load_tokenizer(tokenizer)
            records, chat, dropped = rollout_records(tok, read_records(data), cfg.model.seq_len - cfg.ppo.max_new_tokens)
        if dropped:
            log.warning("%d prompt conversations do not fit seq_len - max_new_tokens: dropped", dropped)
        with phases.phase("tracking_start"):
            tracker = stack.enter_context(job_run(cfg))
            tracker.set_tags(tags)
            tracker.log_dataset(data, "train")
        ctl = PPOController(cfg, policy_dir=policy, critic_dir=critic or policy, reward_dir=reward,
                            tokenizer_dir=tokenizer, records=records, tracker=tracker, env=env,
                            stop_ids=generation_stop_ids(tok, chat) if chat else None)
        return run_roles_and_export(ctl, cfg, tracker, tags, out, phases)


SPEC = KindSpec(
    name="ppo", config=PPOConfig, run=run, check=check, plan=plan, outputs=model_output, data_format="prompts",
    summary="RLHF with PPO: actor, critic, reference and reward as Ray role actors",
    model_inputs={"reward_model": "ppo.reward_model", "*": "model.pretrained"},
    key_metrics=("reward_mean", "final_reward_mean", "reward", "kl"),
)

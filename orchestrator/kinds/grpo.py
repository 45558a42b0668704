"""``grpo``: critic-free RL (GRPO, Dr.GRPO, RLOO, REINFORCE++) with rewards written as Python functions.

Roles on the PPO machinery (:class:`orchestrator.rlhf.grpo.GRPOController`): actor, reference (not
started when ``grpo.kl_coef`` is 0) and reward (``reward.functions`` and/or ``reward.model``); no critic.
The math is in ``orchestrator/rlhf/{advantages,losses,kl,sampling}.py``; every default and its reason
is in :class:`orchestrator.config.rlhf.GRPOOptions` / :class:`~orchestrator.config.rlhf.RewardConfig`.
Reads ``data.path`` of format ``prompts`` (the records' other fields reach the reward functions; the
generated ``data.task`` when null); flat prompts or conversations (rendered with the policy's chat template
and its generation prompt; generation then stops at the template's end of turn), holding out
``grpo.num_eval_prompts`` of the ``data.eval_fraction`` split for the held-out pass rate; takes ``model.pretrained`` and ``reward.model`` from upstream stages; output
``model`` (the actor's export).
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
from orchestrator.config.rlhf import GRPOOptions, RewardConfig
from orchestrator.config.rollout import RolloutConfig, check_rollout, rollout_tags
from orchestrator.core.timing import Phases
from orchestrator.kinds.registry import KindSpec, model_output
from orchestrator.rlhf.placement import check_placement, check_storage
from orchestrator.rlhf.plan import grpo_plan, grpo_roles
from orchestrator.rlhf.rewards import check_reward_functions

log = logging.getLogger(__name__)


@dataclass
class GRPOConfig(TrainJobConfig):
    kind: str = "grpo"
    grpo: GRPOOptions = field(default_factory=GRPOOptions)
    """Critic-free RL options (group sampling, advantage estimator, loss, KL, dynamic sampling)."""
    reward: RewardConfig = field(default_factory=RewardConfig)
    """The reward: Python functions and/or a reward model, weighted."""
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    """Generation engine of the rollouts (``rollout.engine=hf|vllm``), weight sync and mismatch correction."""


def check(cfg: GRPOConfig) -> None:
    """GRPO-specific checks (the generic ones ran before)."""
    p = cfg.grpo
    check_placement(p.colocate, cfg.cluster.placement, "grpo")
    check_storage(cfg.cluster.storage_path, "grpo")
    if cfg.parallel.zero_stage == 3:
        raise ConfigError("parallel.zero_stage", "the actor generates with the HF model, which needs whole (not "
                          "ZeRO-3 partitioned) weights", "use parallel=zero0, zero1 or zero2 for grpo")
    per_update = cfg.parallel.micro_batch_size * p.actor.num_workers
    if p.minibatch_size % per_update:
        raise ConfigError("grpo.minibatch_size", f"{p.minibatch_size} completions are not divisible by "
                          f"parallel.micro_batch_size * grpo.actor.num_workers = {per_update}",
                          "pick a minibatch size divisible by micro_batch_size times the actor's workers")
    if cfg.model.seq_len <= p.max_new_tokens:
        raise ConfigError("grpo.max_new_tokens", f"{p.max_new_tokens} leaves no room for the prompt in "
                          f"model.seq_len={cfg.model.seq_len}", "lower grpo.max_new_tokens or raise model.seq_len")
    if p.loss_norm_length is not None and p.loss_agg != "seq_mean_token_sum_norm":
        log.warning("grpo.loss_norm_length=%d is ignored: only loss_agg=seq_mean_token_sum_norm uses it "
                    "(loss_agg=%s)", p.loss_norm_length, p.loss_agg)
    if p.kl_coef == 0 and p.kl_mode == "reward":
        log.warning("grpo.kl_mode=reward does nothing with grpo.kl_coef=0 (no KL, no reference role)")
    check_rollout(cfg, [getattr(p, r) for r in grpo_roles(p)])
    check_reward_functions(cfg.reward.functions)


def plan(cfg: GRPOConfig) -> dict[str, Any]:
    return {"model_params": cfg.model.num_params(), **grpo_plan(cfg)}


def run(cfg: GRPOConfig) -> Mapping[str, Any]:
    """Returns run id, output/export dirs, the registered version and the final step's metrics."""
    from orchestrator.core.files import has_tokenizer
    from orchestrator.data.shards import load_manifest, read_records
    from orchestrator.training.sampler import split_heldout
    from orchestrator.rlhf.placement import ROLE_PRELOAD, prewarm_role_hosts
    from orchestrator.runtime.ray_runtime import ray_session, worker_env
    from orchestrator.tracking import job_run, lineage_tags
    from orchestrator.training.inputs import dataset_dir, init_model_dir, pick_tokenizer, resolve_model

    phases = Phases()
    t_inputs = time.perf_counter()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    policy = resolve_model(cfg.model.pretrained, cfg, "model.pretrained")
    reward = resolve_model(cfg.reward.model, cfg, "reward.model")
    data = dataset_dir(cfg, "prompts", policy if has_tokenizer(policy) else None)
    tokenizer = pick_tokenizer(policy, data)
    if policy is None:
        log.warning("model.pretrained is null: GRPO starts from a randomly initialised policy (smoke run only)")
        policy = init_model_dir(cfg, tokenizer)
    tags = lineage_tags(policy=cfg.model.pretrained, reward_model=cfg.reward.model, dataset=str(data),
                        reward_functions=",".join(f.function for f in cfg.reward.functions) or None)
    tags.update(rollout_tags(cfg))
    env = worker_env(cfg.cluster)
    phases.add("inputs", time.perf_counter() - t_inputs)
    with contextlib.ExitStack() as stack:
        with phases.phase("ray_start"):
            stack.enter_context(ray_session(cfg.cluster, preload=ROLE_PRELOAD))
            # the role processes start importing now, while the prompts are tokenized and the MLflow run opens
            prewarm_role_hosts(cfg.grpo, grpo_roles(cfg.grpo), ("actor",), cfg.cluster, env)
        with phases.phase("prompts"):
            from orchestrator.data.tokenizer import load_tokenizer
            from orchestrator.rlhf.chat_prompts import generation_stop_ids, rollout_records
            from orchestrator.rlhf.controller import run_roles_and_export
            from orchestrator.rlhf.grpo import GRPOController

            tok = load_tokenizer(tokenizer)
            raw = read_records(data)
            train_idx, eval_idx = split_heldout(len(raw), cfg.data.eval_fraction if cfg.grpo.num_eval_prompts else 0.0,
                                                load_manifest(data)["digest"])
            budget = cfg.model.seq_len - cfg.grpo.max_new_tokens
            records, chat, dropped = rollout_records(tok, [raw[i] for i in train_idx], budget)
            eval_records = rollout_records(tok, [raw[i] for i in eval_idx], budget)[0][:cfg.grpo.num_eval_prompts]
        if dropped:
            log.warning("%d prompt conversations do not fit seq_len - max_new_tokens: dropped", dropped)
        with phases.phase("tracking_start"):
            tracker = stack.enter_context(job_run(cfg))
            tracker.set_tags(tags)
            tracker.log_dataset(data, "train")
        ctl = GRPOController(cfg, policy_dir=policy, reward_dir=reward, tokenizer_dir=tokenizer, records=records,
                             tracker=tracker, env=env,
                             stop_ids=generation_stop_ids(tok, chat) if chat else None, eval_records=eval_records)
        return run_roles_and_export(ctl, cfg, tracker, tags, out, phases)


SPEC = KindSpec(
    name="grpo", config=GRPOConfig, run=run, check=check, plan=plan, outputs=model_output, data_format="prompts",
    summary="Critic-free RL (GRPO, Dr.GRPO, RLOO, REINFORCE++) with rewards as Python functions",
    model_inputs={"reward_model": "reward.model", "*": "model.pretrained"},
    key_metrics=("eval_pass_rate", "reward_mean", "final_reward_mean", "pass_rate", "kl"),
)

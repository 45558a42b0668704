"""The PPO controller (driver side): rollout -> experience -> minibatch updates, checkpoints, recovery.

One PPO step::

    prompts (seeded sampler)  -> actor.generate (KV cache, temperature/top-p, EOS)      [generate]
    actor/reference log-probs, critic values, the reward role's score (reward model at the last response
    token, or ``reward.functions`` on the decoded text)                                 [score]
    reward normaliser -> r_t = -beta*KL_t (+ score on the last token) -> GAE -> whiten
    ppo_epochs x minibatches: actor clipped-policy step, critic clipped-value step      [train]
    KL controller update; metrics; checkpoint every trainer.save_every steps

Everything random in a step is derived from (``trainer.seed``, step), and the trained roles' optimizer
and schedule states live in the checkpoint, so resuming from step k reproduces an uninterrupted run.
If a role actor dies, the controller kills the remaining roles, starts fresh ones and recomputes
from the last committed checkpoint, at most ``trainer.max_failures`` times.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Optional

import numpy as np

from orchestrator.rlhf.batches import left_pad_prompts
from orchestrator.rlhf.controller import RoleController, RoleSpec
from orchestrator.rlhf.groups import pass_rate
from orchestrator.rlhf.grpo_roles import RewardFunctionRole, reward_base_dir, score_on_role
from orchestrator.rlhf.kl import make_kl_controller
from orchestrator.rlhf.mismatch import engine_mismatch
from orchestrator.rlhf.preference import RewardNormalizer
from orchestrator.rlhf.roles import CriticRole, PolicyRole
from orchestrator.rlhf.rollout import make_experience, minibatch_indices, pad_right, select, sequence_batch, shard_rows
from orchestrator.training.sampler import StepSampler

log = logging.getLogger(__name__)

_EXP_KEYS = ("input_ids", "attention_mask", "position_ids", "response_mask", "old_logprobs", "old_values",
             "advantages", "returns", "tis_weights")


class PPOController(RoleController):
    """Drives the four role groups (the loop, checkpoints and recovery: :class:`RoleController`).

    Args:
        cfg: the frozen ``PPOConfig``.
        policy_dir: local HF dir of the initial policy (actor and reference start from it).
        critic_dir: local dir the critic starts from (reward model or policy).
        reward_dir: local reward-model dir, or None: the reward is then ``reward.functions``.
        tokenizer_dir: tokenizer of the policy.
        records: prompt records (``prompt`` text plus the fields reward functions read).
        tracker: a :class:`~orchestrator.tracking.JobTracker` (or an object with the same logging API).
    """

    fault_role = "critic"

    def __init__(self, cfg: Any, *, policy_dir: str, critic_dir: str, reward_dir: Optional[str], tokenizer_dir: str,
                 records: list[dict[str, Any]], tracker: Any, env: dict[str, str],
                 stop_ids: Optional[list[int]] = None) -> None:
        super().__init__(cfg, tokenizer_dir=tokenizer_dir, tracker=tracker, env=env)
        self.policy_dir, self.critic_dir, self.reward_dir = policy_dir, critic_dir, reward_dir
        self.records = records
        # conversation prompts stop at the template's end of turn too (rlhf.chat_prompts.generation_stop_ids)
        self.stop: int | list[int] = stop_ids if stop_ids else self.tok.eos_token_id
        self.updates_per_step = self.p.ppo_epochs * (self.p.rollout_batch_size // self.p.minibatch_size)
        self.reset_state()

    # ------------------------------------------------------------------ state
    def reset_state(self) -> None:
        p = self.p
        self.step = 0
        self.kl_ctl = make_kl_controller(p.kl_controller, p.kl_coef, p.kl_target, p.kl_horizon)
        self.normalizer = RewardNormalizer(enabled=p.normalize_reward)
        self.sampler = StepSampler(indices=np.arange(len(self.records)), global_batch=p.rollout_batch_size,
                                   micro_batch=p.rollout_batch_size, dp_rank=0, dp_size=1, seed=self.cfg.trainer.seed)

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "kl_controller": self.kl_ctl.state_dict(), "reward_normalizer": self.normalizer.state_dict(),
                "sampler": self.sampler.state_dict(), "mlflow_run_id": getattr(self.tracker, "run_id", None)}

    def load_state_dict(self, st: dict[str, Any]) -> None:
        self.step = int(st["step"])
        self.kl_ctl.load_state_dict(st["kl_controller"])
        self.normalizer.load_state_dict(st["reward_normalizer"])
        self.sampler.load_state_dict(st["sampler"])

    # ------------------------------------------------------------------ roles
    def role_specs(self) -> dict[str, RoleSpec]:
        cfg, base = self.cfg, reward_base_dir()
        total = cfg.trainer.max_steps * self.updates_per_step

        def kw(r: int, n: int, m: str) -> dict[str, Any]:
            return dict(rank=r, world_size=n, master=m)

        return {
            "actor": (PolicyRole, lambda r, n, m: ((cfg, self.policy_dir, True, total), kw(r, n, m))),
            "critic": (CriticRole, lambda r, n, m: ((cfg, self.critic_dir, total), kw(r, n, m))),
            "reference": (PolicyRole, lambda r, n, m: ((cfg, self.policy_dir, False), kw(r, n, m))),
            "reward": (RewardFunctionRole, lambda r, n, m: ((cfg, self.reward_dir, self.tokenizer_dir, base),
                                                            kw(r, n, m))),
        }

    def trained_roles(self) -> tuple[str, ...]:
        return ("actor", "critic")

    def on_roles_started(self) -> None:
        if self.step == 0:
            import ray

            stats = ray.get(self.groups["reward"].workers[0].stats.remote())
            if stats and self.p.normalize_reward:
                # the reward model's statistics act as a prior worth the samples they were computed on
                self.normalizer = RewardNormalizer(stats["reward_mean"], stats["reward_std"],
                                                   count=int(stats.get("reward_count", 2)), enabled=True)

    # ------------------------------------------------------------------ one step
    def rollout(self, step: int) -> tuple[dict[str, Any], dict[str, float], dict[str, Any]]:
        p, seed = self.p, self.cfg.trainer.seed
        idx = self.sampler.next_step()[0]
        records = [self.records[int(i)] for i in idx]
        texts = [r["prompt"] for r in records]
        prompts = left_pad_prompts(self.tok, texts, self.cfg.model.seq_len - p.max_new_tokens)
        t0 = time.perf_counter()
        import ray

        g = self.groups["actor"]
        shards = shard_rows(prompts, len(g)) if len(g) > 1 else [prompts]
        resp = ray.get([w.rollout.remote(s, seed * 100003 + step, self.stop, self.tok.pad_token_id)
                        for w, s in zip(g.workers, shards)])
        responses = pad_right([r["responses"] for r in resp], self.tok.pad_token_id)
        batch = sequence_batch(prompts["input_ids"], prompts["attention_mask"], responses, self.stop,
                               self.tok.pad_token_id)
        t1 = time.perf_counter()
        self.maybe_inject_failure(step)
        logp = self.gather("actor", "logprobs", batch)
        ref = self.gather("reference", "logprobs", batch)
        values = self.gather("critic", "values", batch)
        scored = score_on_role(self.groups["reward"], batch, records, step)
        # the reward model's score is the reward when there is one; the functions then only monitor
        raw = scored["model_raw"] if "model_raw" in scored else scored["functions_total"]
        self.normalizer.update(raw)
        scores = self.normalizer.normalize(raw)
        exp, stats = make_experience(batch, logp, ref, values, scores, beta=self.kl_ctl.value, kl_kind=p.kl_kind,
                                     gamma=p.gamma, lam=p.lam, whiten=p.whiten_advantages)
        stats.update(engine_mismatch(exp, resp, self.cfg.rollout.tis_cap))
        t2 = time.perf_counter()
        functions = {k: v for k, v in scored["per_function"].items() if k != "model"}
        rule = scored["functions_total"]
        stats.update({"reward_mean": float(raw.mean()), "reward_std": float(raw.std()), "beta": self.kl_ctl.value,
                      "time_generate_s": t1 - t0, "time_score_s": t2 - t1,
                      **{f"reward/{k}": float(v.mean()) for k, v in functions.items()},
                      **{f"reward_errors/{k}": float(v) for k, v in scored["num_errors"].items()}})
        if functions:  # the weighted functions' total (= reward_mean without a reward model)
            stats.update(rule_score_mean=float(rule.mean()), pass_rate=pass_rate(functions))
        for msg in scored["errors"][:3]:
            log.warning("reward.on_error=zero: %s", msg)
        samples = {"prompt": texts, "rule_score": rule.tolist(), "score": raw.tolist(), "batch": batch}
        return exp, stats, samples

    def train(self, exp: dict[str, Any], step: int) -> dict[str, float]:
        import ray

        p, seed = self.p, self.cfg.trainer.seed
        train_actor = step > p.critic_warmup_steps
        sums: dict[str, float] = {}
        n_updates = 0
        n = exp["input_ids"].shape[0]
        for epoch in range(p.ppo_epochs):
            for idx in minibatch_indices(n, p.minibatch_size, seed, step, epoch):
                mb = select(exp, idx, _EXP_KEYS)
                num_tokens = float(mb["response_mask"].sum())
                futures = []
                for name in (("actor", "critic") if train_actor else ("critic",)):
                    g = self.groups[name]
                    futures += g.call_sharded("train_minibatch", shard_rows(mb, len(g)), num_tokens)
                for st in ray.get(futures):  # per-rank stats are already normalised by the minibatch tokens
                    for k, v in st.items():
                        sums[k] = sums.get(k, 0.0) + v
                n_updates += 1
        if train_actor:
            self.sync_rollout_engines()
        return {k: v / n_updates for k, v in sums.items()}

    def sync_rollout_engines(self) -> None:
        """Weights of every actor rank into its rollout engine (a no-op for ``rollout.engine=hf``)."""
        import ray

        ray.get(self.groups["actor"].call("sync_rollout_engine"))

    def after_load(self) -> None:
        """A checkpoint was loaded into the roles (resume, recovery): the engines take the actor's weights."""
        self.sync_rollout_engines()

    def step_stats(self, step: int) -> tuple[dict[str, float], dict[str, Any]]:
        exp, stats, samples = self.rollout(step)
        t1 = time.perf_counter()
        stats.update(self.train(exp, step))
        self.kl_ctl.update(stats["kl"], self.p.rollout_batch_size)
        stats["time_train_s"] = time.perf_counter() - t1
        return stats, samples

    def sample_table(self, step: int, samples: dict[str, Any]) -> dict[str, list]:
        """The first ``ppo.num_samples_logged`` prompts/responses/rewards."""
        import ray

        n = self.p.num_samples_logged
        batch = samples["batch"]
        _, responses = ray.get(self.groups["reward"].workers[0].decode.remote(select(batch, np.arange(min(n, len(samples["prompt"]))))))
        return {"step": [step] * len(responses), "prompt": samples["prompt"][:n], "response": responses,
                "score": samples["score"][:n], "rule_score": samples["rule_score"][:n]}

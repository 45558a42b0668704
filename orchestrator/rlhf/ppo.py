"""The PPO controller (driver side): rollout -> experience -> minibatch updates, checkpoints, recovery.

One PPO step::

    prompts (seeded sampler)  -> actor.generate (KV cache, temperature/top-p, EOS)      [generate]
    actor/reference log-probs, critic values, reward score at the last response token  [score]
    reward normaliser -> r_t = -beta*KL_t (+ score on the last token) -> GAE -> whiten
    ppo_epochs x minibatches: actor clipped-policy step, critic clipped-value step      [train]
    KL controller update; metrics; checkpoint every trainer.save_every steps

Everything random in a step is derived from (``trainer.seed``, step), and the trained roles' optimizer
and schedule states live in the checkpoint, so resuming from step k reproduces an uninterrupted run.
If a role actor dies, the controller kills the remaining roles, starts fresh ones and recomputes
from the last committed checkpoint, at most ``trainer.max_failures`` times.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from orchestrator.config.jobs import checkpoint_root
from orchestrator.rlhf.batches import left_pad_prompts
from orchestrator.rlhf.kl import make_kl_controller
from orchestrator.rlhf.placement import RoleGroup, create_placement_group
from orchestrator.rlhf.ppo_checkpoint import find_resume_checkpoint, load_ppo_state, save_ppo_checkpoint
from orchestrator.rlhf.preference import RewardNormalizer
from orchestrator.rlhf.roles import CriticRole, PolicyRole, RewardRole
from orchestrator.rlhf.rollout import make_experience, minibatch_indices, pad_right, select, sequence_batch, shard_rows
from orchestrator.training.metrics import StepLog
from orchestrator.training.sampler import StepSampler

log = logging.getLogger(__name__)

_EXP_KEYS = ("input_ids", "attention_mask", "position_ids", "response_mask", "old_logprobs", "old_values",
             "advantages", "returns")


class PPOController:
    """Drives the four role groups.

    Args:
        cfg: the frozen ``PPOConfig``.
        policy_dir: local HF dir of the initial policy (actor and reference start from it).
        critic_dir: local dir the critic starts from (reward model or policy).
        reward_dir: local reward-model dir, or None for the rule-based ``ppo.reward_fn``.
        tokenizer_dir: tokenizer of the policy.
        prompts: prompt strings.
        tracker: a :class:`~orchestrator.tracking.JobTracker` (or an object with the same logging API).
    """

    def __init__(self, cfg: Any, *, policy_dir: str, critic_dir: str, reward_dir: Optional[str], tokenizer_dir: str,
                 prompts: list[str], tracker: Any, env: dict[str, str],
                 stop_ids: Optional[list[int]] = None) -> None:
        from transformers import AutoTokenizer

        self.cfg, self.p = cfg, cfg.ppo
        self.policy_dir, self.critic_dir, self.reward_dir = policy_dir, critic_dir, reward_dir
        self.tokenizer_dir, self.prompts, self.tracker, self.env = tokenizer_dir, prompts, tracker, env
        self.tok = AutoTokenizer.from_pretrained(tokenizer_dir)
        # conversation prompts stop at the template's end of turn too (rlhf.chat_prompts.generation_stop_ids)
        self.stop: int | list[int] = stop_ids if stop_ids else self.tok.eos_token_id
        self.out = Path(cfg.output_dir)
        self.ckpt_root = checkpoint_root(cfg)
        self.steplog = StepLog(self.out / "steps.jsonl")
        self.updates_per_step = self.p.ppo_epochs * (self.p.rollout_batch_size // self.p.minibatch_size)
        self.groups: dict[str, RoleGroup] = {}
        self.pg = None
        self._reset_state()

    # ------------------------------------------------------------------ state
    def _reset_state(self) -> None:
        p = self.p
        self.step = 0
        self.kl_ctl = make_kl_controller(p.kl_controller, p.kl_coef, p.kl_target, p.kl_horizon)
        self.normalizer = RewardNormalizer(enabled=p.normalize_reward)
        self.sampler = StepSampler(indices=np.arange(len(self.prompts)), global_batch=p.rollout_batch_size,
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
    def start_roles(self) -> None:
        """(Re)create the placement group and the role actors from the initial models."""
        self.stop_roles()
        cfg, p = self.cfg, self.p
        self.pg, index = create_placement_group(p, cfg.cluster.placement)
        total = cfg.trainer.max_steps * self.updates_per_step

        def group(name: str, cls: type, make: Any) -> RoleGroup:
            return RoleGroup(name, cls, getattr(p, name), self.pg, index[name], make, self.env)

        self.groups = {
            "actor": group("actor", PolicyRole, lambda r, n, m: ((cfg, self.policy_dir, True, total), dict(rank=r, world_size=n, master=m))),
            "critic": group("critic", CriticRole, lambda r, n, m: ((cfg, self.critic_dir, total), dict(rank=r, world_size=n, master=m))),
            "reference": group("reference", PolicyRole, lambda r, n, m: ((cfg, self.policy_dir, False), dict(rank=r, world_size=n, master=m))),
            "reward": group("reward", RewardRole, lambda r, n, m: ((cfg, self.reward_dir, self.tokenizer_dir), dict(rank=r, world_size=n, master=m))),
        }
        if self.step == 0:
            import ray

            stats = ray.get(self.groups["reward"].workers[0].stats.remote())
            if stats and p.normalize_reward:
                # the reward model's statistics act as a prior worth the samples they were computed on
                self.normalizer = RewardNormalizer(stats["reward_mean"], stats["reward_std"],
                                                   count=int(stats.get("reward_count", 2)), enabled=True)

    def stop_roles(self) -> None:
        from ray.util.placement_group import remove_placement_group

        for g in self.groups.values():
            g.kill()
        self.groups = {}
        if self.pg is not None:
            try:
                remove_placement_group(self.pg)
            except Exception:
                pass
            self.pg = None

    def _gather(self, name: str, method: str, batch: dict[str, Any], pad: float = 0.0) -> Any:
        import ray

        g = self.groups[name]
        outs = ray.get(g.call_sharded(method, shard_rows(batch, len(g)) if len(g) > 1 else [batch]))
        if isinstance(outs[0], dict):
            return {k: torch.cat([o[k] for o in outs]) for k in outs[0]}
        return pad_right(outs, pad) if outs[0].dim() == 2 else torch.cat(outs)

    # ------------------------------------------------------------------ one step
    def rollout(self, step: int) -> tuple[dict[str, Any], dict[str, float], dict[str, Any]]:
        p, seed = self.p, self.cfg.trainer.seed
        idx = self.sampler.next_step()[0]
        texts = [self.prompts[int(i)] for i in idx]
        prompts = left_pad_prompts(self.tok, texts, self.cfg.model.seq_len - p.max_new_tokens)
        t0 = time.perf_counter()
        import ray

        g = self.groups["actor"]
        shards = shard_rows(prompts, len(g)) if len(g) > 1 else [prompts]
        resp = ray.get([w.generate.remote(s, seed * 100003 + step, self.stop, self.tok.pad_token_id)
                        for w, s in zip(g.workers, shards)])
        responses = pad_right(resp, self.tok.pad_token_id)
        batch = sequence_batch(prompts["input_ids"], prompts["attention_mask"], responses, self.stop,
                               self.tok.pad_token_id)
        t1 = time.perf_counter()
        self.maybe_inject_failure(step)
        logp = self._gather("actor", "logprobs", batch)
        ref = self._gather("reference", "logprobs", batch)
        values = self._gather("critic", "values", batch)
        scored = self._gather("reward", "score", batch)
        raw = scored["score"]
        self.normalizer.update(raw)
        scores = self.normalizer.normalize(raw)
        exp, stats = make_experience(batch, logp, ref, values, scores, beta=self.kl_ctl.value, kl_kind=p.kl_kind,
                                     gamma=p.gamma, lam=p.lam, whiten=p.whiten_advantages)
        t2 = time.perf_counter()
        stats.update({"reward_mean": float(raw.mean()), "reward_std": float(raw.std()),
                      "rule_score_mean": float(scored["rule_score"].mean()), "beta": self.kl_ctl.value,
                      "time_generate_s": t1 - t0, "time_score_s": t2 - t1})
        samples = {"prompt": texts, "rule_score": scored["rule_score"].tolist(), "score": raw.tolist(), "batch": batch}
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
        return {k: v / n_updates for k, v in sums.items()}

    def maybe_inject_failure(self, step: int) -> None:
        """``trainer.fail_at_step``: the critic actor's process dies mid-step, once (marker file)."""
        fail = self.cfg.trainer.fail_at_step
        if fail is None or step != fail:
            return
        marker = self.out / f".fail_at_step_{step}.done"
        if marker.exists():
            return
        marker.write_text("injected\n")
        log.warning("[fault injection] killing the critic role at PPO step %d", step)
        self.groups["critic"].workers[0].die.remote()

    # ------------------------------------------------------------------ loop
    def run(self) -> dict[str, Any]:
        import ray

        cfg = self.cfg
        resume_from = find_resume_checkpoint(self.ckpt_root, cfg.resume)
        failures, recoveries = 0, 0
        if resume_from is None:  # a fresh run forgets step records of an earlier attempt without checkpoints
            self.steplog.path.unlink(missing_ok=True)
        self.start_roles()
        if resume_from is not None:
            self.load_state_dict(load_ppo_state(resume_from, self._trained()))
        last: dict[str, float] = {}
        while self.step < cfg.trainer.max_steps:
            step = self.step + 1
            try:
                last = self._one_step(step)
            except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
                failures += 1
                if failures > cfg.trainer.max_failures:
                    raise RuntimeError(f"PPO role failed {failures} times (trainer.max_failures="
                                       f"{cfg.trainer.max_failures}); last error: {exc}") from exc
                log.warning("a PPO role died at step %d (%s); recovering from the last checkpoint", step, exc)
                recoveries += 1
                self._recover()
        return {"steps": self.step, "failures_recovered": recoveries, "last_metrics": last}

    def _trained(self) -> list[RoleGroup]:
        return [self.groups["actor"], self.groups["critic"]]

    def _recover(self) -> None:
        self.stop_roles()
        self._reset_state()
        self.start_roles()
        ckpt = find_resume_checkpoint(self.ckpt_root, "auto")
        if ckpt is not None:
            self.load_state_dict(load_ppo_state(ckpt, self._trained()))

    def _one_step(self, step: int) -> dict[str, float]:
        cfg, p = self.cfg, self.p
        t0 = time.perf_counter()
        exp, stats, samples = self.rollout(step)
        t1 = time.perf_counter()
        stats.update(self.train(exp, step))
        t2 = time.perf_counter()
        self.kl_ctl.update(stats["kl"], p.rollout_batch_size)
        stats.update({"time_train_s": t2 - t1, "step_time_s": t2 - t0})
        self.step = step
        self.steplog.append(step, stats)
        if step % cfg.trainer.log_every == 0:
            self.tracker.log_metrics(stats, step)
        if step % p.sample_every == 0 or step == cfg.trainer.max_steps:
            self.log_samples(step, samples)
        if step == cfg.trainer.max_steps or (cfg.trainer.save_every and step % cfg.trainer.save_every == 0):
            save_ppo_checkpoint(self.ckpt_root, step, self._trained(), self.state_dict(), cfg.trainer.keep_checkpoints)
        return stats

    def log_samples(self, step: int, samples: dict[str, Any]) -> None:
        """Table of the first ``ppo.num_samples_logged`` prompts/responses/rewards (MLflow + local JSON)."""
        import ray

        n = self.p.num_samples_logged
        batch = samples["batch"]
        _, responses = ray.get(self.groups["reward"].workers[0].decode.remote(select(batch, np.arange(min(n, len(samples["prompt"]))))))
        table = {"step": [step] * len(responses), "prompt": samples["prompt"][:n], "response": responses,
                 "score": samples["score"][:n], "rule_score": samples["rule_score"][:n]}
        d = self.out / "samples"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"step_{step:06d}.json").write_text(json.dumps(table, indent=1))
        client = getattr(self.tracker, "client", None)
        if client is not None:
            client.log_table(self.tracker.run_id, data=table, artifact_file=f"samples/step_{step:06d}.json")

    def export(self, out_dir: Path) -> Path:
        import shutil

        import ray

        out_dir.mkdir(parents=True, exist_ok=True)
        ray.get(self.groups["actor"].workers[0].export.remote(str(out_dir)))
        for f in Path(self.tokenizer_dir).iterdir():
            if f.is_file() and ("token" in f.name or f.name == "special_tokens_map.json"):
                shutil.copy2(f, out_dir / f.name)
        return out_dir

    def fingerprints(self) -> dict[str, float]:
        import ray

        return {"actor": ray.get(self.groups["actor"].workers[0].state_fingerprint.remote())}

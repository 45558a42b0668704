"""The critic-free RL controller (``grpo``): group sampling -> rewards -> group advantages -> policy steps.

One step::

    rollout_batch_size prompts (seeded sampler), each x group_size -> actor.generate       [generate]
    reward role: reward.functions (+ reward model) on the decoded completions; overlong penalty
    dynamic sampling: drop groups whose rewards are all equal, generate more (<= max_refills rounds)
    actor (and reference) log-probs of the chosen groups                                  [score]
    advantages by grpo.advantage (KL in the reward when grpo.kl_mode=reward)
    num_epochs x minibatches: clipped policy step (+ beta * KL loss, grpo.loss_agg)         [train]
    held-out prompts (before step 1, then every grpo.eval_every steps and after the last): pass rate [eval]

No critic; the reference role is not started when ``grpo.kl_coef`` is 0. The loop, checkpoints
(actor engine + prompt sampler), exact resume and killed-role recovery are
:class:`~.controller.RoleController`'s, as for PPO.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Optional, Sequence

import numpy as np
import torch

from orchestrator.rlhf.advantages import compute_token_advantages
from orchestrator.rlhf.batches import left_pad_prompts
from orchestrator.rlhf.controller import RoleController, RoleSpec
from orchestrator.rlhf.groups import (
    SampledGroup, choose_groups, concat_responses, pass_rate, repeat_rows, response_stats, round_seed, split_groups)
from orchestrator.rlhf.grpo_roles import GRPOPolicyRole, RewardFunctionRole, reward_base_dir, score_on_role
from orchestrator.rlhf.kl import kl_penalty
from orchestrator.rlhf.masked import masked_mean
from orchestrator.rlhf.plan import grpo_roles
from orchestrator.rlhf.roles import PolicyRole
from orchestrator.rlhf.rollout import minibatch_indices, pad_right, select, sequence_batch, shard_rows
from orchestrator.rlhf.sampling import GroupRefill, group_reward_stats, overlong_penalty
from orchestrator.training.sampler import StepSampler

log = logging.getLogger(__name__)

_TRAIN_KEYS = ("input_ids", "attention_mask", "position_ids", "response_mask", "old_logprobs", "ref_logprobs",
               "advantages")


class GRPOController(RoleController):
    """Actor, reference (if the KL is on) and reward roles of a ``grpo`` job.

    Args:
        cfg: the frozen ``GRPOConfig``.
        policy_dir: local HF dir of the initial policy (actor and reference start from it).
        reward_dir: local reward-model dir (``reward.model``) or None.
        tokenizer_dir: tokenizer of the policy.
        records: prompt records (``prompt`` text plus the fields reward functions read).
        tracker, env: as :class:`RoleController`.
        stop_ids: tokens that end a response besides EOS's role (conversation prompts: the chat template's
            end of turn and EOS, :func:`~.chat_prompts.generation_stop_ids`); None = EOS.
        eval_records: held-out prompt records (never trained on) for the ``eval_*`` metrics; none = no evaluation.
    """

    def __init__(self, cfg: Any, *, policy_dir: str, reward_dir: Optional[str], tokenizer_dir: str,
                 records: list[dict[str, Any]], tracker: Any, env: dict[str, str],
                 stop_ids: Optional[list[int]] = None, eval_records: Sequence[dict[str, Any]] = ()) -> None:
        super().__init__(cfg, tokenizer_dir=tokenizer_dir, tracker=tracker, env=env)
        self.policy_dir, self.reward_dir, self.records = policy_dir, reward_dir, records
        self.eval_records = list(eval_records)
        self.stop: int | list[int] = stop_ids if stop_ids else self.tok.eos_token_id
        p = self.p
        self.completions = p.rollout_batch_size * p.group_size
        self.updates_per_step = p.num_epochs * (self.completions // p.minibatch_size)
        self.reset_state()

    # ------------------------------------------------------------------ state
    def reset_state(self) -> None:
        self.step = 0
        B = self.p.rollout_batch_size
        self.sampler = StepSampler(indices=np.arange(len(self.records)), global_batch=B, micro_batch=B, dp_rank=0,
                                   dp_size=1, seed=self.cfg.trainer.seed)

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "sampler": self.sampler.state_dict(),
                "mlflow_run_id": getattr(self.tracker, "run_id", None)}

    def load_state_dict(self, st: dict[str, Any]) -> None:
        self.step = int(st["step"])
        self.sampler.load_state_dict(st["sampler"])

    def role_specs(self) -> dict[str, RoleSpec]:
        cfg, total, base = self.cfg, self.cfg.trainer.max_steps * self.updates_per_step, reward_base_dir()

        def kw(r: int, n: int, m: str) -> dict[str, Any]:
            return dict(rank=r, world_size=n, master=m)

        specs: dict[str, RoleSpec] = {
            "actor": (GRPOPolicyRole, lambda r, n, m: ((cfg, self.policy_dir, True, total), kw(r, n, m)))}
        if "reference" in grpo_roles(self.p):
            specs["reference"] = (PolicyRole, lambda r, n, m: ((cfg, self.policy_dir, False), kw(r, n, m)))
        specs["reward"] = (RewardFunctionRole, lambda r, n, m: (
            (cfg, self.reward_dir, self.tokenizer_dir, base, cfg.reward.model_weight), kw(r, n, m)))
        return specs

    # ------------------------------------------------------------------ rollout
    def _generate(self, texts: list[str], seed: int) -> dict[str, Any]:
        import ray

        p = self.p
        prompts = left_pad_prompts(self.tok, texts, self.cfg.model.seq_len - p.max_new_tokens)
        g = self.groups["actor"]
        shards = shard_rows(prompts, len(g)) if len(g) > 1 else [prompts]
        resp = ray.get([w.generate.remote(s, seed, self.stop, self.tok.pad_token_id)
                        for w, s in zip(g.workers, shards)])
        return self._batch(prompts, pad_right(resp, self.tok.pad_token_id))

    def _batch(self, prompts: dict[str, torch.Tensor], responses: torch.Tensor) -> dict[str, Any]:
        return sequence_batch(prompts["input_ids"], prompts["attention_mask"], responses, self.stop,
                              self.tok.pad_token_id)

    def _score(self, batch: dict[str, Any], records: list[dict[str, Any]], step: int) -> dict[str, Any]:
        """The reward role's scores (:func:`~.grpo_roles.score_on_role`), with the overlong penalty in ``total``."""
        p = self.p
        scored = score_on_role(self.groups["reward"], batch, records, step)
        penalty = overlong_penalty(batch["response_mask"].sum(dim=1), p.max_new_tokens, p.overlong_buffer,
                                   p.overlong_penalty_factor)
        return dict(scored, total=scored["total"] + penalty, penalty=penalty)

    def _round(self, step: int, round_index: int, idx: np.ndarray, errors: dict[str, int]) -> list[SampledGroup]:
        """Generate and score one round of ``len(idx)`` prompts x ``group_size``."""
        G = self.p.group_size
        records = [self.records[int(i)] for i in idx]
        rows = repeat_rows(records, G)
        batch = self._generate([r["prompt"] for r in rows], round_seed(self.cfg.trainer.seed, step, round_index))
        if round_index == 0:
            self.maybe_inject_failure(step)
        scored = self._score(batch, rows, step)
        for k, v in scored["num_errors"].items():
            errors[k] = errors.get(k, 0) + v
        for msg in scored["errors"][:3]:
            log.warning("reward.on_error=zero: %s", msg)
        responses = batch["input_ids"][:, batch["prompt_len"]:]
        return split_groups(records, responses, scored["total"], scored["per_function"], G)

    def sample_groups(self, step: int) -> tuple[list[SampledGroup], dict[str, float]]:
        """The step's groups: one round, or DAPO's dynamic sampling (drop all-equal groups, refill, cap)."""
        p = self.p
        refill = GroupRefill(p.rollout_batch_size, p.max_refills if p.dynamic_sampling else 0)
        generated: list[SampledGroup] = []
        errors: dict[str, int] = {}
        while True:
            groups = self._round(step, refill.num_rounds, self.sampler.next_step()[0], errors)
            generated += groups
            refill.add(groups, [g.informative or not p.dynamic_sampling for g in groups])
            if refill.done:
                break
        chosen = choose_groups(refill.result(), generated, p.rollout_batch_size)
        all_scores = torch.cat([g.scores for g in generated])
        stats = {**group_reward_stats(all_scores, p.group_size),
                 **{f"reward_errors/{k}": float(v) for k, v in errors.items()}}
        if p.dynamic_sampling:
            stats.update({k: float(v) for k, v in refill.stats().items()})
        return chosen, stats

    # ------------------------------------------------------------------ experience
    def experience(self, groups: list[SampledGroup]) -> tuple[dict[str, Any], dict[str, float]]:
        """Rebuild one batch from the chosen groups, score log-probs, compute advantages."""
        p, G = self.p, self.p.group_size
        texts = repeat_rows([g.record["prompt"] for g in groups], G)
        prompts = left_pad_prompts(self.tok, texts, self.cfg.model.seq_len - p.max_new_tokens)
        batch = self._batch(prompts, concat_responses(groups, self.tok.pad_token_id))
        mask = batch["response_mask"]
        exp = dict(batch, old_logprobs=self.gather("actor", "logprobs", batch))
        scores = torch.cat([g.scores for g in groups])
        kl = None
        stats: dict[str, float] = {}
        if "reference" in self.groups:
            exp["ref_logprobs"] = self.gather("reference", "logprobs", batch)
            kl = kl_penalty(exp["old_logprobs"], exp["ref_logprobs"], p.kl_kind)
            seq_kl = torch.where(mask.bool(), exp["old_logprobs"] - exp["ref_logprobs"], 0.0).sum(dim=1)
            stats.update(kl=float(seq_kl.mean()), kl_per_token=float(masked_mean(kl, mask)))
        exp["advantages"] = compute_token_advantages(
            scores, mask, G, p.advantage, kl=kl if p.kl_mode == "reward" else None, kl_coef=p.kl_coef,
            eps=p.advantage_eps)
        per_function = {k: torch.cat([g.per_function[k] for g in groups]) for k in groups[0].per_function}
        functions = {k: v for k, v in per_function.items() if k in self._function_names()}
        stats.update({f"reward/{k}": float(v.mean()) for k, v in per_function.items()})
        stats.update({"reward_mean": float(scores.mean()), "reward_std": float(scores.std()),
                      "pass_rate": pass_rate(functions), "advantage_abs_mean": float(masked_mean(
                          exp["advantages"].abs(), mask)),
                      **response_stats(mask, batch["input_ids"][:, batch["prompt_len"]:], self.stop,
                                       p.max_new_tokens)})
        return exp, stats

    def _function_names(self) -> set[str]:
        return {f.metric_name for f in self.cfg.reward.functions}

    # ------------------------------------------------------------------ train
    def train(self, exp: dict[str, Any], step: int) -> dict[str, float]:
        import ray

        p, seed, g = self.p, self.cfg.trainer.seed, self.groups["actor"]
        sums: dict[str, float] = {}
        n_updates = 0
        for epoch in range(p.num_epochs):
            for idx in minibatch_indices(self.completions, p.minibatch_size, seed, step, epoch):
                mb = select(exp, idx, _TRAIN_KEYS)
                num_tokens, num_seqs = float(mb["response_mask"].sum()), float(len(idx))
                for st in ray.get(g.call_sharded("train_minibatch", shard_rows(mb, len(g)), num_tokens, num_seqs)):
                    for k, v in st.items():  # per-rank stats are already normalised by the minibatch totals
                        sums[k] = sums.get(k, 0.0) + v
                n_updates += 1
        return {k: v / n_updates for k, v in sums.items()}

    # ------------------------------------------------------------------ held-out evaluation
    def evaluate(self, step: int) -> dict[str, float]:
        """Pass rate and mean total reward on the held-out prompts, ``eval_samples_per_prompt`` each, sampled
        with the same seeds at every evaluation (and in chunks of one training round, the engines' size)."""
        p = self.p
        rows = repeat_rows(self.eval_records, p.eval_samples_per_prompt)
        chunk = p.rollout_batch_size * p.group_size
        names = self._function_names()
        passed, total = [], []
        for i in range(0, len(rows), chunk):
            part = rows[i:i + chunk]
            # step 0 is never a training step: these seeds are the evaluation's alone
            batch = self._generate([r["prompt"] for r in part], round_seed(self.cfg.trainer.seed, 0, i // chunk))
            scored = score_on_role(self.groups["reward"], batch, part, step)
            functions = [v for k, v in scored["per_function"].items() if k in names]
            if functions:
                passed.append(torch.stack([v >= 1.0 for v in functions]).all(dim=0).float())
            total.append(scored["total"])
        out = {"eval_reward_mean": float(torch.cat(total).mean())}
        if passed:
            out["eval_pass_rate"] = float(torch.cat(passed).mean())
        return out

    def step_stats(self, step: int) -> tuple[dict[str, float], dict[str, Any]]:
        p, stats = self.p, {}
        t0 = time.perf_counter()
        if step == 1 and self.eval_records:  # the initial (e.g. SFT) policy, before any update
            stats.update({f"initial_{k}": v for k, v in self.evaluate(step).items()})
        t_eval = time.perf_counter() - t0
        t0 = time.perf_counter()
        groups, sample_stats = self.sample_groups(step)
        stats.update(sample_stats)
        t1 = time.perf_counter()
        exp, exp_stats = self.experience(groups)
        t2 = time.perf_counter()
        stats.update(exp_stats)
        stats.update(self.train(exp, step))
        t3 = time.perf_counter()
        if self.eval_records and (step == self.cfg.trainer.max_steps or (p.eval_every and step % p.eval_every == 0)):
            stats.update(self.evaluate(step))
        stats.update({"time_generate_score_s": t1 - t0, "time_logprobs_s": t2 - t1, "time_train_s": t3 - t2,
                      "time_eval_s": t_eval + time.perf_counter() - t3})
        return stats, {"groups": groups, "exp": exp}

    def sample_table(self, step: int, samples: dict[str, Any]) -> dict[str, list]:
        """The first ``grpo.num_samples_logged`` completions with their rewards and advantages."""
        import ray

        n = min(self.p.num_samples_logged, self.completions)
        exp = samples["exp"]
        prompts, responses = ray.get(self.groups["reward"].workers[0].decode.remote(select(exp, np.arange(n))))
        scores = torch.cat([g.scores for g in samples["groups"]])[:n].tolist()
        adv = exp["advantages"][:n, 0].tolist()
        return {"step": [step] * n, "prompt": prompts, "response": responses, "reward": scores, "advantage": adv}

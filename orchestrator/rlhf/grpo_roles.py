"""The critic-free roles of ``grpo`` and the reward role of both RL kinds.

* :class:`GRPOPolicyRole` - the PPO :class:`~.roles.PolicyRole` (generation, log-probs, checkpoint,
  export) with the critic-free loss: DAPO's asymmetric clip, ``grpo.loss_agg``, the KL to the reference
  as a loss term (``grpo.kl_mode=loss``) and an optional entropy bonus, all aggregated the same way.
* :class:`RewardFunctionRole` - the reward role of ``grpo`` and ``ppo``: decodes completions and scores
  them with ``reward.functions`` (:class:`~.rewards.RewardScorer`: concurrent, timed, validated) and/or
  a reward model; :func:`score_on_role` is the driver's side of it (shards, gathers, names a failing
  function plainly).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from orchestrator.rlhf.kl import kl_loss
from orchestrator.rlhf.losses import aggregate_loss, entropy_from_logits, logprobs_from_logits, policy_loss
from orchestrator.rlhf.rewards import RewardFunctionError, RewardScorer, load_reward_function
from orchestrator.rlhf.roles import PolicyRole, RoleBase, _fwd_kwargs, decode_batch


class GRPOPolicyRole(PolicyRole):
    """The trained policy of ``grpo`` (the frozen reference is a plain :class:`PolicyRole`)."""

    def _micro_loss(self, micro: dict[str, Any], num_tokens: float, num_seqs: float) -> tuple[torch.Tensor, dict]:
        """Loss of one micro-batch, normalised by the whole minibatch's tokens/sequences (so micro losses add)."""
        p, P = self.cfg.grpo, micro["prompt_len"]
        logits = self.engine(**_fwd_kwargs(micro), use_cache=False).logits[:, :-1][:, P - 1:]
        logp = logprobs_from_logits(logits, micro["input_ids"][:, P:])
        mask = micro["response_mask"]
        norm = dict(num_tokens=num_tokens, num_seqs=num_seqs, norm_length=p.loss_norm_length or p.max_new_tokens)
        loss, st = policy_loss(logp, micro["old_logprobs"], micro["advantages"], mask, p.clip_low,
                               clip_high=p.clip_high, loss_agg=p.loss_agg, **norm)
        st["policy_loss"] = float(loss.detach())
        entropy = aggregate_loss(entropy_from_logits(logits), mask, p.loss_agg, **norm)
        st["entropy"] = float(entropy.detach())
        total = loss - p.entropy_coef * entropy
        if p.kl_mode == "loss" and p.kl_coef > 0:
            kl, kl_st = kl_loss(logp, micro["ref_logprobs"], mask, p.kl_kind, p.loss_agg, **norm)
            total = total + p.kl_coef * kl
            st.update(kl_st)
        return total, st

    def train_minibatch(self, mb: dict[str, Any], num_tokens: float, num_seqs: float = 0.0) -> dict[str, float]:
        """One optimizer step on this rank's share of a minibatch of ``num_tokens`` tokens in ``num_seqs``
        completions (the whole minibatch's, over all ranks)."""
        self.engine.train()
        stats: dict[str, float] = {}
        micros = self._micro_batches(mb)
        self._last_grad_norm = None
        for micro in micros:
            total, st = self._micro_loss(micro, num_tokens, num_seqs or None)
            self.engine.backward(total * self.world_size, scale_wrt_gas=False)
            self._maybe_record_grad_norm(micro is micros[-1])
            self.engine.step()
            for k, v in st.items():
                stats[k] = stats.get(k, 0.0) + v
        stats["actor_grad_norm"] = self._grad_norm()
        return stats


class RewardFunctionRole(RoleBase):
    """Scores completions with ``reward.functions`` and/or the reward model ``model_dir``.

    Args:
        cfg: the job config (its ``reward`` group: functions, on_error, timeout_s).
        model_dir: local reward-model dir, or None.
        tokenizer_dir: the policy's tokenizer (to decode completions).
        base_dir: directory relative ``file.py:function`` specs are resolved against (the driver's cwd).
        model_weight: weight of the reward model's normalised score in ``total`` (grpo's
            ``reward.model_weight``; ppo reads ``model_raw`` instead).
    """

    role = "reward"

    def __init__(self, cfg: Any, model_dir: Optional[str], tokenizer_dir: str, base_dir: str,
                 model_weight: float = 1.0, rank: int = 0, world_size: int = 1, master: Optional[str] = None) -> None:
        super().__init__(cfg, rank, world_size, master)
        from transformers import AutoTokenizer

        r = cfg.reward
        self.tok = AutoTokenizer.from_pretrained(tokenizer_dir)
        fns = [load_reward_function(f.function, f.weight, f.metric_name, base_dir) for f in r.functions]
        self.scorer = RewardScorer(fns, r.on_error, r.timeout_s) if fns else None
        self.model, self.meta, self.model_weight = None, {}, float(model_weight)
        self.mean, self.std = 0.0, 1.0
        if model_dir is not None:
            from orchestrator.models.heads import load_scalar_model

            self.model = load_scalar_model(model_dir, kind="reward")
            self.model.requires_grad_(False)
            self.model.eval()
            self.meta = dict(self.model.meta)
            self.mean = float(self.meta.get("reward_mean", 0.0))
            self.std = float(self.meta.get("reward_std", 1.0)) or 1.0

    def stats(self) -> dict[str, Any]:
        """The reward model's stored mean/std/count (ppo's reward normaliser starts from them), if any."""
        return {k: self.meta[k] for k in ("reward_mean", "reward_std", "reward_count") if k in self.meta}

    def decode(self, batch: dict[str, Any]) -> tuple[list[str], list[str]]:
        return decode_batch(self.tok, batch)

    @torch.no_grad()
    def score(self, batch: dict[str, Any], records: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """``total`` [B] (weighted functions + ``model_weight`` x normalised reward model), ``functions_total``
        [B] (the weighted functions alone), ``model_raw`` [B] (the reward model's raw score, when there is
        one), ``per_function`` {name: [B]}, ``num_errors`` {name: count} and ``errors`` (``on_error=zero``).

        Raises:
            RewardFunctionError: a function failed and ``reward.on_error=raise``.
        """
        prompts, completions = self.decode(batch)
        n = len(completions)
        functions_total = torch.zeros(n)
        out: dict[str, Any] = {"per_function": {}, "num_errors": {}, "errors": []}
        if self.scorer is not None:
            res = self.scorer(prompts, completions, records)
            functions_total = torch.tensor(res.total, dtype=torch.float32)
            out.update(per_function={k: torch.tensor(v, dtype=torch.float32) for k, v in res.per_function.items()},
                       num_errors=dict(res.num_errors), errors=list(res.errors))
        total = functions_total.clone()
        if self.model is not None:
            from orchestrator.models.heads import last_token_values

            raw = last_token_values(self.model(**_fwd_kwargs(batch)), batch["attention_mask"]).float()
            normed = (raw - self.mean) / self.std
            out["per_function"]["model"] = normed
            out["model_raw"] = raw
            total += self.model_weight * normed
        out.update(total=total, functions_total=functions_total)
        return out


def score_on_role(group: Any, batch: dict[str, Any], records: Sequence[dict[str, Any]], step: int) -> dict[str, Any]:
    """The driver's call of :meth:`RewardFunctionRole.score`: ``batch`` and its ``records`` (one per row)
    sharded over the role's actors, the outputs concatenated. A reward function's failure is re-raised
    as the plain :class:`RewardFunctionError` (naming the function, the record and ``step``), not as
    Ray's wrapped task error."""
    import ray

    from orchestrator.rlhf.rollout import shard_rows

    bounds = np.linspace(0, len(records), len(group) + 1).astype(int)
    shards = shard_rows(batch, len(group)) if len(group) > 1 else [batch]
    try:
        outs = ray.get([w.score.remote(s, list(records[bounds[i]:bounds[i + 1]]))
                        for i, (w, s) in enumerate(zip(group.workers, shards))])
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, RewardFunctionError):  # the user's function failed: say which, plainly
            raise RewardFunctionError(cause.function, f"{cause.problem} (step {step})", cause.record) from None
        raise
    merged = {k: torch.cat([o[k] for o in outs]) for k in ("total", "functions_total", "model_raw") if k in outs[0]}
    merged.update(per_function={k: torch.cat([o["per_function"][k] for o in outs]) for k in outs[0]["per_function"]},
                  num_errors={k: sum(o["num_errors"].get(k, 0) for o in outs)
                              for k in {k for o in outs for k in o["num_errors"]}},
                  errors=[e for o in outs for e in o["errors"]])
    return merged


def reward_base_dir() -> str:
    """The driver's working directory, against which relative reward-function files are resolved."""
    return str(Path.cwd())

"""The critic-free roles of ``grpo``: the actor's clipped-policy step and the reward-function role.

* :class:`GRPOPolicyRole` - the PPO :class:`~.roles.PolicyRole` (generation, log-probs, checkpoint,
  export) with the critic-free loss: DAPO's asymmetric clip, ``grpo.loss_agg``, the KL to the reference
  as a loss term (``grpo.kl_mode=loss``) and an optional entropy bonus, all aggregated the same way; with
  ``rollout.tis_cap`` each token's clipped term is weighted by its truncated importance-sampling weight.
* :class:`RewardFunctionRole` - decodes completions and scores them with ``reward.functions``
  (:class:`~.rewards.RewardScorer`: concurrent, timed, validated) plus an optional reward model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from orchestrator.rlhf.kl import kl_loss
from orchestrator.rlhf.losses import aggregate_loss, entropy_from_logits, logprobs_from_logits, policy_loss
from orchestrator.rlhf.rewards import RewardScorer, load_reward_function
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
                               clip_high=p.clip_high, loss_agg=p.loss_agg, token_weights=micro.get("tis_weights"),
                               **norm)
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
        self.weights_version += 1  # the rollout engine must be synced before the next rollout
        return stats


class RewardFunctionRole(RoleBase):
    """Scores completions with ``reward.functions`` and/or the reward model ``model_dir``.

    Args:
        cfg: the job config (its ``reward`` group).
        model_dir: local reward-model dir, or None.
        tokenizer_dir: the policy's tokenizer (to decode completions).
        base_dir: directory relative ``file.py:function`` specs are resolved against (the driver's cwd).
    """

    role = "reward"

    def __init__(self, cfg: Any, model_dir: Optional[str], tokenizer_dir: str, base_dir: str, rank: int = 0,
                 world_size: int = 1, master: Optional[str] = None) -> None:
        super().__init__(cfg, rank, world_size, master)
        from transformers import AutoTokenizer

        r = cfg.reward
        self.tok = AutoTokenizer.from_pretrained(tokenizer_dir)
        fns = [load_reward_function(f.function, f.weight, f.metric_name, base_dir) for f in r.functions]
        self.scorer = RewardScorer(fns, r.on_error, r.timeout_s) if fns else None
        self.model, self.mean, self.std = None, 0.0, 1.0
        if model_dir is not None:
            from orchestrator.models.heads import load_scalar_model

            self.model = load_scalar_model(model_dir, kind="reward")
            self.model.requires_grad_(False)
            self.model.eval()
            self.mean = float(self.model.meta.get("reward_mean", 0.0))
            self.std = float(self.model.meta.get("reward_std", 1.0)) or 1.0

    def decode(self, batch: dict[str, Any]) -> tuple[list[str], list[str]]:
        return decode_batch(self.tok, batch)

    @torch.no_grad()
    def score(self, batch: dict[str, Any], records: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """``total`` [B] (weighted functions + weighted normalised reward model), ``per_function`` {name: [B]},
        ``num_errors`` {name: count} and ``errors`` (messages, ``on_error=zero``).

        Raises:
            RewardFunctionError: a function failed and ``reward.on_error=raise``.
        """
        prompts, completions = self.decode(batch)
        n = len(completions)
        total = torch.zeros(n)
        out: dict[str, Any] = {"per_function": {}, "num_errors": {}, "errors": []}
        if self.scorer is not None:
            res = self.scorer(prompts, completions, records)
            total += torch.tensor(res.total, dtype=torch.float32)
            out.update(per_function={k: torch.tensor(v, dtype=torch.float32) for k, v in res.per_function.items()},
                       num_errors=dict(res.num_errors), errors=list(res.errors))
        if self.model is not None:
            from orchestrator.models.heads import last_token_values

            values = last_token_values(self.model(**_fwd_kwargs(batch)), batch["attention_mask"])
            normed = (values.float() - self.mean) / self.std
            out["per_function"]["model"] = normed
            total += self.cfg.reward.model_weight * normed
        out["total"] = total
        return out


def reward_base_dir() -> str:
    """The driver's working directory, against which relative reward-function files are resolved."""
    return str(Path.cwd())

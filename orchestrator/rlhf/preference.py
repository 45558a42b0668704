"""Pairwise preference losses: Bradley-Terry (reward model) and DPO (Rafailov et al., 2023)."""

from __future__ import annotations

import math
import torch
import torch.nn.functional as F

__all__ = ["bradley_terry_loss", "dpo_loss", "sequence_logprobs", "RewardNormalizer"]


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor,
                       margin: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
    """``mean(-log sigmoid(r_w - r_l - m))`` over ``[batch]`` scalar rewards.

    Returns:
        ``(loss, stats)`` with ``accuracy`` (share of pairs with ``r_w > r_l``) and the mean margin.
    """
    diff = chosen - rejected
    loss = -F.logsigmoid(diff - margin).mean()
    with torch.no_grad():
        stats = {"accuracy": float((diff > 0).float().mean()), "margin": float(diff.mean())}
    return loss, stats


def sequence_logprobs(token_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of per-token log-probabilities over the response mask: ``log pi(y | x)`` per row."""
    return (token_logprobs * mask.to(token_logprobs.dtype)).sum(dim=-1)


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float,
             label_smoothing: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
    """DPO loss on ``[batch]`` sequence log-probabilities.

    ``h = beta * ((log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l)))``,
    ``loss = -(1 - s) log sigmoid(h) - s log sigmoid(-h)`` (``s`` = label smoothing, conservative DPO).

    Returns:
        ``(loss, stats)``: implicit rewards ``beta * (log pi - log ref)`` of chosen/rejected, their
        margin and the share of pairs ranked correctly.
    """
    chosen_reward = beta * (policy_chosen - ref_chosen)
    rejected_reward = beta * (policy_rejected - ref_rejected)
    h = chosen_reward - rejected_reward
    loss = (-(1 - label_smoothing) * F.logsigmoid(h) - label_smoothing * F.logsigmoid(-h)).mean()
    with torch.no_grad():
        stats = {
            "chosen_reward": float(chosen_reward.mean()),
            "rejected_reward": float(rejected_reward.mean()),
            "margin": float(h.mean()),
            "accuracy": float((h > 0).float().mean()),
        }
    return loss, stats


class RewardNormalizer:
    """Running mean/std of reward scores (Welford), to standardise scores fed to PPO.

    Initialised from the reward model's stored statistics when available; ``update`` folds in
    every rollout batch so the scale tracks the policy's own reward distribution.
    """

    def __init__(self, mean: float = 0.0, std: float = 1.0, count: int = 0, enabled: bool = True) -> None:
        self.mean, self.count, self.enabled = float(mean), int(count), enabled
        self._m2 = float(std) ** 2 * max(count - 1, 0)
        self._init_std = float(std)

    @property
    def std(self) -> float:
        if self.count < 2:
            return self._init_std
        return math.sqrt(self._m2 / (self.count - 1))

    def update(self, scores: torch.Tensor) -> None:
        for x in scores.detach().double().flatten().tolist():
            self.count += 1
            delta = x - self.mean
            self.mean += delta / self.count
            self._m2 += delta * (x - self.mean)

    def normalize(self, scores: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
        if not self.enabled:
            return scores
        return (scores - self.mean) / (self.std + eps)

    def state_dict(self) -> dict:
        return {"mean": self.mean, "count": self.count, "m2": self._m2, "init_std": self._init_std,
                "enabled": self.enabled}

    def load_state_dict(self, state: dict) -> None:
        self.mean, self.count, self._m2 = float(state["mean"]), int(state["count"]), float(state["m2"])
        self._init_std, self.enabled = float(state["init_std"]), bool(state["enabled"])


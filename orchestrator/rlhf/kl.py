"""KL penalty estimators and the beta controllers (fixed, adaptive).

Per-token estimators of KL(pi || pi_ref) from samples of pi (Schulman, "Approximating KL
divergence", 2020), with ``log_ratio = logp - ref_logp``:

* ``k1 = log_ratio`` - unbiased, can be negative per token; the classic RLHF penalty (default).
* ``k2 = 0.5 * log_ratio^2`` - biased, low variance, always >= 0.
* ``k3 = exp(-log_ratio) - 1 + log_ratio`` - unbiased and always >= 0.

PPO folds the estimate into the reward (:func:`kl_penalty`); GRPO adds it to the loss instead
(:func:`kl_loss`, Shao et al. 2024 use k3). As a *loss term* only the gradient matters: with samples
from the policy, k1's gradient ``grad log pi`` has expectation 0 (it regularises nothing on average),
k2's has the expectation of ``grad KL(pi || ref)``, and k3's that of ``grad KL(ref || pi)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from orchestrator.rlhf.losses import aggregate_loss
from orchestrator.rlhf.masked import zero_outside

KL_KINDS = ("k1", "k2", "k3")

__all__ = ["kl_penalty", "kl_loss", "KL_KINDS", "FixedKLController", "AdaptiveKLController", "make_kl_controller"]


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: str = "k1") -> torch.Tensor:
    """Per-token KL estimate between the policy and the reference (same shape as the inputs)."""
    log_ratio = logprobs.float() - ref_logprobs.float()
    if kind == "k1":
        return log_ratio
    if kind == "k2":
        return 0.5 * log_ratio**2
    if kind == "k3":
        # clamp keeps exp() finite when the policy has drifted far (ratio < e^-20 is KL-dominated anyway)
        return torch.exp(torch.clamp(-log_ratio, max=20.0)) - 1.0 + log_ratio
    raise ValueError(f"unknown KL estimator {kind!r}; use one of {KL_KINDS}")


def kl_loss(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor, kind: str = "k3",
            loss_agg: str = "token_mean", *, num_tokens: Optional[float] = None, num_seqs: Optional[float] = None,
            norm_length: Optional[float] = None) -> tuple[torch.Tensor, dict[str, float]]:
    """KL(pi || pi_ref) estimate as a loss term (multiply by beta and add to the policy loss).

    Args:
        logprobs: ``[B, T]`` current policy log-probs of the sampled tokens (with gradient).
        ref_logprobs: ``[B, T]`` reference log-probs of the same tokens.
        mask: ``[B, T]`` response mask; NaN/inf at masked positions does not leak into loss or gradient.
        kind: ``k1``, ``k2`` or ``k3`` (GRPO's choice, Shao et al. 2024 eq. 4).
        loss_agg: aggregation, the same as the policy loss's (see :func:`losses.aggregate_loss`).
        num_tokens, num_seqs, norm_length: minibatch denominators, as for the policy loss.

    Returns:
        ``(loss, stats)`` with ``kl_loss`` (the aggregated estimate, detached) and ``kl_k1`` (the
        aggregated log-ratio, the plain sample estimate whatever ``kind``).
    """
    logprobs = zero_outside(logprobs, mask)
    ref_logprobs = zero_outside(ref_logprobs.to(logprobs.dtype), mask)
    per_token = kl_penalty(logprobs, ref_logprobs, kind)

    def agg(x: torch.Tensor) -> torch.Tensor:
        return aggregate_loss(x, mask, loss_agg, num_tokens=num_tokens, num_seqs=num_seqs, norm_length=norm_length)

    loss = agg(per_token)
    with torch.no_grad():
        stats = {"kl_loss": float(loss), "kl_k1": float(agg(logprobs.float() - ref_logprobs.float()))}
    return loss, stats


@dataclass
class FixedKLController:
    """Constant beta."""

    value: float

    def update(self, current_kl: float, n_steps: int) -> None:  # noqa: ARG002 - same API as adaptive
        return None

    def state_dict(self) -> dict:
        return {"kind": "fixed", "value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])


@dataclass
class AdaptiveKLController:
    """Proportional controller steering the measured KL towards ``target`` (Ziegler et al., 2019).

    ``e = clip(KL / target - 1, -0.2, 0.2)``, ``beta <- beta * (1 + e * n_steps / horizon)``.
    """

    value: float
    target: float
    horizon: int

    def update(self, current_kl: float, n_steps: int) -> None:
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon

    def state_dict(self) -> dict:
        return {"kind": "adaptive", "value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])


def make_kl_controller(kind: str, init: float, target: float, horizon: int):
    """``fixed`` or ``adaptive`` controller starting at ``init``."""
    if kind == "fixed":
        return FixedKLController(init)
    if kind == "adaptive":
        return AdaptiveKLController(init, target, horizon)
    raise ValueError(f"unknown KL controller {kind!r}; use fixed or adaptive")

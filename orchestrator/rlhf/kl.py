"""KL penalty estimators and the beta controllers (fixed, adaptive).

Per-token estimators of KL(pi || pi_ref) from samples of pi (Schulman, "Approximating KL
divergence", 2020), with ``log_ratio = logp - ref_logp``:

* ``k1 = log_ratio`` - unbiased, can be negative per token; the classic RLHF penalty (default).
* ``k2 = 0.5 * log_ratio^2`` - biased, low variance, always >= 0.
* ``k3 = exp(-log_ratio) - 1 + log_ratio`` - unbiased and always >= 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

KL_KINDS = ("k1", "k2", "k3")

__all__ = ["kl_penalty", "KL_KINDS", "FixedKLController", "AdaptiveKLController", "make_kl_controller"]


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

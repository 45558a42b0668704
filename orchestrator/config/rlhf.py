"""Option groups of the post-training jobs: ``sft``, ``reward``, ``ppo``, ``dpo``."""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.config.base import Frozen
from orchestrator.config.errors import require


@dataclass
class SFTOptions(Frozen):
    packing: bool = False
    """Pack several examples per sequence (attention kept inside each example) instead of padding."""


@dataclass
class RewardOptions(Frozen):
    margin: float = 0.0
    """Optional margin m in the Bradley-Terry loss -log sigmoid(r_w - r_l - m)."""


@dataclass
class DPOOptions(Frozen):
    beta: float = 0.1
    """DPO temperature: strength of the implicit KL constraint to the reference (paper default 0.1)."""

    def __post_init__(self) -> None:
        require(self.beta > 0, "dpo.beta", "must be positive", "use e.g. dpo.beta=0.1")


@dataclass
class PPOOptions(Frozen):
    kl_coef: float = 0.05
    """Initial KL penalty beta in r - beta * log(pi/pi_ref)."""
    gamma: float = 1.0
    """Discount; 1.0 because the episode (one response) is short and the reward is terminal."""
    lam: float = 0.95
    """GAE lambda: bias/variance trade-off of the advantage estimate."""
    clip_eps: float = 0.2
    """PPO ratio clip epsilon (Schulman et al. 2017)."""

    def __post_init__(self) -> None:
        require(self.kl_coef >= 0, "ppo.kl_coef", "must be >= 0", "use e.g. ppo.kl_coef=0.05")
        require(0 < self.gamma <= 1, "ppo.gamma", "must be in (0, 1]", "use ppo.gamma=1.0")
        require(0 <= self.lam <= 1, "ppo.lam", "must be in [0, 1]", "use ppo.lam=0.95")
        require(0 < self.clip_eps < 1, "ppo.clip_eps", "must be in (0, 1)", "use ppo.clip_eps=0.2")

"""Option groups of the post-training jobs: ``sft``, ``reward``, ``ppo``, ``dpo``.

Every default says why it is what it is; PPO implementations have shipped silent bugs through
unstated defaults, so nothing here is implicit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from orchestrator.config.base import Frozen
from orchestrator.config.errors import require

KL_KINDS = ("k1", "k2", "k3")
KL_CONTROLLERS = ("fixed", "adaptive")


@dataclass
class SFTOptions(Frozen):
    packing: bool = False
    """Pack several examples per sequence (attention kept inside each example) instead of padding.
    Off by default: with short demo examples padding wastes little and keeps batches simple."""
    max_prompt_tokens: int = 48
    """Prompts longer than this are truncated from the left (the end of a prompt matters most); the
    response gets the rest of ``model.seq_len``."""
    train_on: str = "all_assistant"
    """Conversation (``messages``) records only: which assistant messages carry loss.
    ``all_assistant`` (default: every demonstrated reply is a training signal) or ``last_assistant``
    (only the final reply; earlier ones are context, e.g. when they come from another model). Role
    headers, system, user and tool tokens never carry loss; each trained reply's end-of-turn marker does.
    Flat prompt/response records ignore it."""
    lora_rank: int = 0
    """LoRA rank (peft); 0 = full fine-tuning (the default: tiny models train fully in seconds). With
    LoRA only the adapters train, and the export merges them into plain weights."""
    lora_alpha: float = 16.0
    """LoRA scaling numerator (the update is scaled by alpha / rank); 16 is peft's common choice."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA input; 0 keeps CPU runs bit-exact."""
    lora_target_modules: Optional[list[str]] = None
    """Module names to adapt; null = peft's default for the architecture (q_proj/v_proj for llama,
    c_attn for gpt2)."""

    def __post_init__(self) -> None:
        require(self.max_prompt_tokens >= 1, "sft.max_prompt_tokens", "must be >= 1", "use e.g. 48")
        require(self.train_on in ("all_assistant", "last_assistant"), "sft.train_on",
                f"unknown value {self.train_on!r}", "use all_assistant or last_assistant")
        require(self.lora_rank >= 0, "sft.lora_rank", "must be >= 0", "use 0 (full fine-tuning) or e.g. 8")
        require(0 <= self.lora_dropout < 1, "sft.lora_dropout", "must be in [0, 1)", "use 0.0")


@dataclass
class RewardOptions(Frozen):
    margin: float = 0.0
    """Optional margin m in the Bradley-Terry loss -log sigmoid(r_w - r_l - m); 0 = plain BT."""
    normalize: bool = True
    """Store the mean/std of the trained model's rewards on the training responses next to the
    head, so PPO can standardise scores (a reward scale of ~1 keeps beta and the value clip meaningful)."""


@dataclass
class DPOOptions(Frozen):
    beta: float = 0.1
    """DPO temperature: strength of the implicit KL constraint to the reference (paper default 0.1)."""
    label_smoothing: float = 0.0
    """Conservative DPO: assumed probability that a preference label is flipped; 0 = plain DPO."""
    reference: Optional[str] = None
    """Reference model (local dir or MLflow URI); null = a frozen copy of ``model.pretrained``."""

    def __post_init__(self) -> None:
        require(self.beta > 0, "dpo.beta", "must be positive", "use e.g. dpo.beta=0.1")
        require(0 <= self.label_smoothing < 0.5, "dpo.label_smoothing", "must be in [0, 0.5)", "use 0.0")


@dataclass
class RoleConfig(Frozen):
    num_workers: int = 1
    """Ray actors of this role. Trained roles (actor, critic) all-reduce gradients over gloo/NCCL;
    frozen roles (reference, reward) split each batch between their actors."""
    num_cpus: float = 0.25
    """CPUs reserved per actor; fractional so four roles fit on a 2-core machine."""
    num_gpus: float = 0.0
    """GPUs per actor (fractions let colocated roles share one device)."""

    def __post_init__(self) -> None:
        require(self.num_workers >= 1, "ppo.<role>.num_workers", "must be >= 1", "use 1 or more")
        require(self.num_cpus >= 0 and self.num_gpus >= 0, "ppo.<role>.num_cpus", "must be >= 0", "use e.g. 0.25")


@dataclass
class PPOOptions(Frozen):
    reward_model: Optional[str] = None
    """Reward model dir (written by the ``reward_model`` job) or MLflow URI. null = the rule-based
    verifiable reward ``reward_fn`` (the demo task's exact score)."""
    reward_fn: str = "orchestrator.data.task:score_texts"
    """``module:function(prompts, responses) -> list[float]`` used when ``reward_model`` is null."""
    critic_init: Optional[str] = None
    """Critic backbone; null = the reward model when there is one (it already reads responses for
    value, as in InstructGPT), else the policy."""
    rollout_batch_size: int = 32
    """Prompts per PPO step. (``trainer.global_batch_size`` is not used by PPO.)"""
    minibatch_size: int = 16
    """Sequences per optimizer step inside a PPO epoch; micro-batches of
    ``parallel.micro_batch_size`` accumulate into it with token-mean aggregation."""
    ppo_epochs: int = 2
    """Passes over each rollout batch. Fewer than the common 4 because tiny models drift fast and
    the clip fraction stays low at 2."""
    max_new_tokens: int = 12
    """Response length cap; generation also stops at EOS."""
    temperature: float = 1.0
    """Sampling temperature. 1.0 because PPO's ratio assumes the rollout came from the policy itself;
    other values sample from a different distribution than the one being trained."""
    top_p: float = 1.0
    """Nucleus sampling threshold; 1.0 for the same on-policy reason as ``temperature``."""
    kl_kind: str = "k1"
    """Per-token KL estimator folded into the reward: ``k1`` (log-ratio, unbiased, the classic RLHF
    penalty), ``k2`` (0.5 log-ratio^2) or ``k3`` (unbiased and non-negative)."""
    kl_controller: str = "fixed"
    """``fixed`` beta, or ``adaptive`` (Ziegler et al. 2019) steering the KL towards ``kl_target``.
    Fixed by default: predictable, and the adaptive one needs a target tuned to the task."""
    kl_coef: float = 0.05
    """(Initial) KL penalty beta in r - beta * KL; 0.05 is in the range used by TRL/OpenRLHF."""
    kl_target: float = 6.0
    """Target KL (nats per sequence) of the adaptive controller (Ziegler et al. default)."""
    kl_horizon: int = 10000
    """Horizon (samples) of the adaptive controller (Ziegler et al. default)."""
    gamma: float = 1.0
    """Discount; 1.0 because the episode (one response) is short and the reward is terminal."""
    lam: float = 0.95
    """GAE lambda: bias/variance trade-off of the advantage estimate (0.95 is the common default)."""
    clip_eps: float = 0.2
    """PPO ratio clip epsilon (Schulman et al. 2017)."""
    value_clip_eps: float = 0.2
    """Value clip: how far a value prediction may move from the rollout's value per update. Matched
    to the reward scale (~1 after normalisation)."""
    entropy_coef: float = 0.0
    """Entropy bonus weight; 0 because the KL penalty already keeps the policy from collapsing."""
    whiten_advantages: bool = True
    """Standardise advantages over each rollout batch (stable step sizes across reward scales)."""
    normalize_reward: bool = True
    """Standardise scores with a running mean/std of the scores seen so far, starting from the reward
    model's stored statistics (weighted as the samples they came from) when it has them."""
    critic_lr: Optional[float] = None
    """Critic learning rate; null = ``trainer.lr``."""
    critic_warmup_steps: int = 0
    """PPO steps at the start that only train the critic (lets values settle before the policy moves)."""
    sample_every: int = 5
    """Log a table of sample prompts/responses/rewards as an MLflow artifact every N steps."""
    num_samples_logged: int = 8
    """Rows in each sample table."""
    colocate: bool = True
    """Pack all role actors into one placement-group bundle set (STRICT_PACK, one node); false spreads
    each role over its own bundles (PACK), e.g. to put roles on different GPUs/nodes."""
    actor: RoleConfig = field(default_factory=RoleConfig)
    """The policy being trained (generates the rollouts)."""
    critic: RoleConfig = field(default_factory=RoleConfig)
    """The value model being trained."""
    reference: RoleConfig = field(default_factory=RoleConfig)
    """Frozen copy of the initial (SFT) policy for the KL penalty."""
    reward: RoleConfig = field(default_factory=RoleConfig)
    """Frozen reward model (or the rule-based reward)."""

    def __post_init__(self) -> None:
        require(self.kl_coef >= 0, "ppo.kl_coef", "must be >= 0", "use e.g. ppo.kl_coef=0.05")
        require(0 < self.gamma <= 1, "ppo.gamma", "must be in (0, 1]", "use ppo.gamma=1.0")
        require(0 <= self.lam <= 1, "ppo.lam", "must be in [0, 1]", "use ppo.lam=0.95")
        require(0 < self.clip_eps < 1, "ppo.clip_eps", "must be in (0, 1)", "use ppo.clip_eps=0.2")
        require(self.value_clip_eps > 0, "ppo.value_clip_eps", "must be positive", "use 0.2")
        require(self.kl_kind in KL_KINDS, "ppo.kl_kind", f"unknown estimator {self.kl_kind!r}",
                f"use one of {', '.join(KL_KINDS)}")
        require(self.kl_controller in KL_CONTROLLERS, "ppo.kl_controller", f"unknown {self.kl_controller!r}",
                "use fixed or adaptive")
        require(self.kl_target > 0 and self.kl_horizon > 0, "ppo.kl_target", "target and horizon must be > 0",
                "use e.g. kl_target=6 kl_horizon=10000")
        for name in ("rollout_batch_size", "minibatch_size", "ppo_epochs", "max_new_tokens", "sample_every",
                     "num_samples_logged"):
            require(getattr(self, name) >= 1, f"ppo.{name}", "must be >= 1", "set a value >= 1")
        require(self.rollout_batch_size % self.minibatch_size == 0, "ppo.minibatch_size",
                f"{self.minibatch_size} does not divide ppo.rollout_batch_size={self.rollout_batch_size}",
                "pick a minibatch size that divides the rollout batch")
        require(self.temperature > 0, "ppo.temperature", "must be positive", "use 1.0")
        require(0 < self.top_p <= 1, "ppo.top_p", "must be in (0, 1]", "use 1.0")
        require(self.entropy_coef >= 0, "ppo.entropy_coef", "must be >= 0", "use 0.0")
        require(self.critic_lr is None or self.critic_lr > 0, "ppo.critic_lr", "must be positive", "use null")
        require(self.critic_warmup_steps >= 0, "ppo.critic_warmup_steps", "must be >= 0", "use 0")
        require(":" in self.reward_fn, "ppo.reward_fn", f"{self.reward_fn!r} is not module:function",
                "use e.g. orchestrator.data.task:score_texts")

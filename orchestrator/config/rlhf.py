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
    sample_every: int = 50
    """Every N optimizer steps (and at the last one) log a table of held-out prompts, the model's greedy
    responses and the reference responses to MLflow (``samples/step_<k>.json``); 0 = off. 50 because a
    table costs ``num_samples_logged`` greedy generations of at most ``sample_max_new_tokens`` on rank 0
    while the other ranks wait (the demo model: 4 x 32 tokens in 3 s on a 2-core CPU under heavy load),
    small next to 50 training steps, while a run of a few hundred steps still shows several."""
    num_samples_logged: int = 4
    """Rows in each sample table: a handful to read, not an evaluation set."""
    sample_max_new_tokens: int = 32
    """Cap on each greedy response of a sample table (tokens): long enough for a short answer, cheap."""

    def __post_init__(self) -> None:
        require(self.max_prompt_tokens >= 1, "sft.max_prompt_tokens", "must be >= 1", "use e.g. 48")
        require(self.train_on in ("all_assistant", "last_assistant"), "sft.train_on",
                f"unknown value {self.train_on!r}", "use all_assistant or last_assistant")
        require(self.lora_rank >= 0, "sft.lora_rank", "must be >= 0", "use 0 (full fine-tuning) or e.g. 8")
        require(0 <= self.lora_dropout < 1, "sft.lora_dropout", "must be in [0, 1)", "use 0.0")
        require(self.sample_every >= 0, "sft.sample_every", "must be >= 0", "use 0 (off) or e.g. 50")
        require(self.num_samples_logged >= 1 and self.sample_max_new_tokens >= 1, "sft.num_samples_logged",
                "sample rows and new tokens must be >= 1", "use e.g. sft.num_samples_logged=4 sft.sample_max_new_tokens=32")


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
    sample_every: int = 50
    """Every N optimizer steps (and at the last one) log a table of held-out pairs (prompt, chosen,
    rejected) with their implicit rewards and margin under the policy to MLflow; 0 = off. 50 for the
    same reason as ``sft.sample_every``: a few forward passes on rank 0, noise next to 50 steps."""
    num_samples_logged: int = 4
    """Pairs in each sample table."""

    def __post_init__(self) -> None:
        require(self.beta > 0, "dpo.beta", "must be positive", "use e.g. dpo.beta=0.1")
        require(0 <= self.label_smoothing < 0.5, "dpo.label_smoothing", "must be in [0, 0.5)", "use 0.0")
        require(self.sample_every >= 0, "dpo.sample_every", "must be >= 0", "use 0 (off) or e.g. 50")
        require(self.num_samples_logged >= 1, "dpo.num_samples_logged", "must be >= 1", "use e.g. 4")


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
class SharedRoleProcesses(Frozen):
    """The option ``ppo`` and ``grpo`` share on how their frozen roles are hosted."""

    share_processes: bool = True
    """With ``colocate``: the frozen roles (reference, reward) live inside the actor's processes instead of
    processes of their own (rank r of a frozen role beside actor rank r mod actor ranks), as verl's fused
    workers do: one stack import and one CUDA context less per frozen rank (a PPO job starts 2 processes,
    not 4; a grpo job 1, not 3) at the price of those roles' calls taking turns with the actor's in that
    process. Trained roles (actor, critic) keep their own processes and process groups. false = one process
    per role rank, e.g. to overlap reference and reward work with the actor on a larger machine."""


@dataclass
class PPOOptions(SharedRoleProcesses):
    reward_model: Optional[str] = None
    """Reward model dir (written by the ``reward_model`` job) or MLflow URI: its score is the reward, and
    ``reward.functions`` (if any) are computed alongside for monitoring only (``rule_score_mean``).
    null = the reward is ``reward.functions`` (by default the fruit demo task's exact score)."""
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


# --- critic-free RL (grpo) and reward functions ------------------------------------------------------

ADVANTAGE_MIN_GROUP = {"grpo": 2, "dr_grpo": 2, "rloo": 2, "reinforce_pp": 1, "reinforce_pp_baseline": 2}
"""Advantage estimators (``orchestrator.rlhf.advantages``) and the samples per prompt each needs."""
LOSS_AGGS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm")
KL_MODES = ("loss", "reward")
REWARD_ON_ERROR = ("raise", "zero")


def _finite(x: float) -> bool:
    return x == x and x not in (float("inf"), float("-inf"))


@dataclass
class RewardFunctionConfig(Frozen):
    function: str = ""
    """``package.module:function`` or ``path/to/file.py:function`` (relative to the working directory),
    called as ``f(prompts, completions, **record_fields) -> list[float]`` (see ``orchestrator.rlhf.rewards``)."""
    weight: float = 1.0
    """Weight in the total reward ``sum_f weight_f * r_f``; 1.0 so a single function is the reward itself."""
    name: Optional[str] = None
    """Metric name (``reward/<name>``); null = the function's name."""

    @property
    def metric_name(self) -> str:
        """``name`` or the part of ``function`` after the last colon."""
        return self.name or self.function.rpartition(":")[2]

    def __post_init__(self) -> None:
        module, sep, func = self.function.rpartition(":")
        require(bool(sep and module) and func.isidentifier(), "reward.functions.function",
                f"{self.function!r} is not module:function or file.py:function",
                "use e.g. orchestrator.rlhf.reward_functions:arithmetic_reward or my_rewards.py:score")
        require(_finite(self.weight), "reward.functions.weight", f"{self.weight} is not finite",
                "use a finite weight such as 1.0")


def _default_reward_functions() -> list[RewardFunctionConfig]:
    return [RewardFunctionConfig("orchestrator.rlhf.reward_functions:fruit_reward")]


@dataclass
class RewardFunctionsConfig(Frozen):
    """Rewards written as Python functions: the ``reward`` group of ``ppo`` (whose reward model is
    ``ppo.reward_model``) and the base of ``grpo``'s :class:`RewardConfig`."""

    functions: list[RewardFunctionConfig] = field(default_factory=_default_reward_functions)
    """Reward functions, run concurrently in the reward role. Default: the fruit demo task's exact score,
    the task ``data.path=null`` trains on by default (``data.task=fruit``)."""
    on_error: str = "raise"
    """A function that raises, times out, returns the wrong length or a non-finite value: ``raise`` fails
    the step naming the function and the record; ``zero`` scores those records 0 and counts them
    (``reward_errors/<name>``). ``raise`` by default: a silent 0 would teach the policy the wrong thing."""
    timeout_s: float = 30.0
    """Wall-clock limit of one function on one batch. Verifiers take milliseconds; one that takes 30 s is
    stuck (e.g. a pathological expression in a math checker), and the step should not hang on it."""

    def __post_init__(self) -> None:
        names = [f.metric_name for f in self.functions]
        dupes = sorted({n for n in names if names.count(n) > 1})
        require(not dupes, "reward.functions", f"duplicate function names {dupes} (they name the metrics)",
                "give each a distinct name: {function: ..., name: ...}")
        require("model" not in names, "reward.functions", "a function named 'model' (the reward model's metric name)",
                "give it another name: {function: ..., name: ...}")
        require(self.on_error in REWARD_ON_ERROR, "reward.on_error", f"unknown {self.on_error!r}", "use raise or zero")
        require(self.timeout_s > 0, "reward.timeout_s", "must be positive", "use e.g. 30")


@dataclass
class RewardConfig(RewardFunctionsConfig):
    """The reward of critic-free RL: Python functions and/or a reward model, summed with weights.

    (Not to be confused with :class:`RewardOptions`, the options of the ``reward_model`` training job.)
    """

    model: Optional[str] = None
    """Reward model dir (from the ``reward_model`` job) or MLflow URI, added to the functions; null = none."""
    model_weight: float = 1.0
    """Weight of the reward model's (normalised) score in the total."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(bool(self.functions) or self.model is not None, "reward.functions", "no reward: no functions and "
                "no reward.model", "list at least one function or set reward.model")
        require(_finite(self.model_weight), "reward.model_weight", "must be finite", "use 1.0")


@dataclass
class GRPOOptions(SharedRoleProcesses):
    """Critic-free RL on the PPO role controller: actor, reference (none when ``kl_coef`` is 0), reward."""

    group_size: int = 8
    """Samples per prompt; the group is each sample's baseline. 8 as TRL's ``num_generations`` default
    (DeepSeekMath used 64, DAPO 16: more samples, better baselines, more generation)."""
    rollout_batch_size: int = 8
    """Prompts per step; ``rollout_batch_size x group_size`` = 64 completions, twice PPO's 32, about the
    generation a 2-core CPU does in a few seconds on the tiny demo model."""
    minibatch_size: int = 32
    """Completions per optimizer step: two per rollout, so the second is slightly off-policy and the
    ratio clip has work to do (verl's mini-batch pattern). Set it to the whole rollout for exactly
    on-policy single updates."""
    num_epochs: int = 1
    """Passes over each rollout; 1 as DeepSeekMath (mu = 1) and TRL's ``num_iterations`` default."""
    max_new_tokens: int = 12
    """Response length cap (the demo tasks answer in a few tokens); generation also stops at EOS."""
    temperature: float = 1.0
    """Sampling temperature: 1.0 samples from the policy being trained (the ratio assumes it) and keeps
    a group's samples diverse enough to differ in reward."""
    top_p: float = 1.0
    """Nucleus threshold; 1.0 for the same on-policy reason."""
    advantage: str = "grpo"
    """``grpo`` (group z-score, Shao et al. 2024), ``dr_grpo`` (group mean only, Liu et al. 2025),
    ``rloo`` (leave-one-out, Ahmadian et al. 2024), ``reinforce_pp`` (batch whitening, Hu 2025) or
    ``reinforce_pp_baseline`` (group mean, then batch whitening, Hu 2025)."""
    advantage_eps: float = 1e-6
    """Added to a std before dividing, so a group of identical rewards gets advantage 0 (verl's 1e-6)."""
    loss_agg: str = "token_mean"
    """``token_mean`` (every token weighs the same; DAPO sec. 3.3, verl's default), ``seq_mean_token_mean``
    (the original GRPO objective, which favours short correct and long wrong answers, Liu et al. 2025)
    or ``seq_mean_token_sum_norm`` (Dr.GRPO's constant normaliser)."""
    loss_norm_length: Optional[int] = None
    """The constant of ``seq_mean_token_sum_norm``; null = ``max_new_tokens`` (Dr.GRPO divides by the
    generation budget). Used by that aggregation only."""
    clip_low: float = 0.2
    """Ratio clip below 1 (``1 - clip_low``): PPO's epsilon (Schulman et al. 2017), kept by DAPO."""
    clip_high: float = 0.28
    """Ratio clip above 1 (``1 + clip_high``): DAPO's clip-higher (Yu et al. 2025) lets unlikely tokens with
    a positive advantage grow, which keeps the policy's entropy from collapsing. 0.2 = symmetric PPO."""
    kl_coef: float = 0.04
    """KL beta; 0.04 as DeepSeekMath (Shao et al. 2024). 0 = no KL and no reference role (DAPO and
    Dr.GRPO drop it)."""
    kl_mode: str = "loss"
    """``loss``: beta * KL estimate added to the policy loss (GRPO); ``reward``: -beta * KL per token folded
    into the reward before the advantage (REINFORCE++, Hu 2025, and PPO)."""
    kl_kind: str = "k3"
    """KL estimator (Schulman 2020): ``k3`` as GRPO's loss term (DeepSeekMath eq. 4), ``k1`` or ``k2``."""
    entropy_coef: float = 0.0
    """Entropy bonus weight; 0 as DAPO and verl: clip-higher already counters entropy collapse."""
    dynamic_sampling: bool = False
    """DAPO's dynamic sampling: drop groups whose rewards are all equal (advantage 0, no gradient) and
    generate more prompts until the step has ``rollout_batch_size`` informative groups. Off by default:
    it costs extra generation and makes step time vary."""
    max_refills: int = 9
    """Cap on extra generation rounds per step with ``dynamic_sampling`` (at most 10 rounds in all, as
    verl's ``max_num_gen_batches`` in its DAPO example); at the cap the step trains on the groups it has
    and logs how many it lacked. 0 = drop only."""
    overlong_buffer: int = 0
    """DAPO's soft overlong punishment (Yu et al. 2025, eq. 13): the last ``overlong_buffer`` tokens before
    ``max_new_tokens`` ramp a penalty from 0 to ``-overlong_penalty_factor``. 0 = off (the demo tasks
    answer far below the cap); DAPO used a fifth of the budget (4096 of 20480)."""
    overlong_penalty_factor: float = 1.0
    """Penalty of a response that reaches ``max_new_tokens`` (DAPO: 1.0, the scale of a 0/1 reward)."""
    num_eval_prompts: int = 64
    """Held-out prompts (the first of the ``data.eval_fraction`` split, which every job reading the dataset
    holds out the same way) scored before the first step (``initial_eval_pass_rate``) and after every
    ``eval_every``-th and the last step (``eval_pass_rate``, ``eval_reward_mean``); none of them is trained
    on. 64 prompts x ``eval_samples_per_prompt`` 4 = 256 completions: a pass-rate standard error of about
    0.03, for the generation of four training steps. 0 = no held-out evaluation."""
    eval_samples_per_prompt: int = 4
    """Completions per held-out prompt, sampled at ``temperature``/``top_p`` with one fixed seed, so every
    evaluation draws the same random numbers and a change between two is the policy's, not sampling noise.
    Sampled rather than greedy: the pass rate of the distribution being trained (a greedy answer can be
    right while the policy is still often wrong)."""
    eval_every: int = 0
    """Also evaluate after every N-th step; 0 = only before the first and after the last step."""
    sample_every: int = 5
    """Log a table of sample prompts/completions/rewards as an MLflow artifact every N steps."""
    num_samples_logged: int = 8
    """Rows in each sample table."""
    colocate: bool = True
    """Pack all role actors into one STRICT_PACK placement group (one node); false spreads them (PACK)."""
    actor: RoleConfig = field(default_factory=RoleConfig)
    """The policy being trained (also generates the rollouts)."""
    reference: RoleConfig = field(default_factory=RoleConfig)
    """Frozen initial policy for the KL term; not started when ``kl_coef`` is 0."""
    reward: RoleConfig = field(default_factory=RoleConfig)
    """Runs the reward functions (and the reward model, if any)."""

    def __post_init__(self) -> None:
        for name in ("group_size", "rollout_batch_size", "minibatch_size", "num_epochs", "max_new_tokens",
                     "sample_every", "num_samples_logged", "eval_samples_per_prompt"):
            require(getattr(self, name) >= 1, f"grpo.{name}", "must be >= 1", "set a value >= 1")
        for name in ("num_eval_prompts", "eval_every"):
            require(getattr(self, name) >= 0, f"grpo.{name}", "must be >= 0", "use 0 to turn it off")
        self._check_estimator()
        self._check_policy_loss()
        completions = self.rollout_batch_size * self.group_size
        require(completions % self.minibatch_size == 0, "grpo.minibatch_size",
                f"{self.minibatch_size} does not divide rollout_batch_size x group_size = {completions}",
                "pick a minibatch size (in completions) that divides it")
        require(self.temperature > 0, "grpo.temperature", "must be positive", "use 1.0")
        require(0 < self.top_p <= 1, "grpo.top_p", "must be in (0, 1]", "use 1.0")
        require(self.max_refills >= 0, "grpo.max_refills", "must be >= 0", "use e.g. 9, or 0 to drop only")
        require(not (self.dynamic_sampling and self.group_size < 2), "grpo.dynamic_sampling",
                "a group of 1 always has equal rewards, so every group would be dropped",
                "set grpo.group_size >= 2 or grpo.dynamic_sampling=false")
        require(0 <= self.overlong_buffer < self.max_new_tokens, "grpo.overlong_buffer",
                f"must be in [0, max_new_tokens={self.max_new_tokens})", "use 0 (off) or e.g. max_new_tokens // 5")
        require(self.overlong_penalty_factor >= 0, "grpo.overlong_penalty_factor", "must be >= 0", "use 1.0")

    def _check_estimator(self) -> None:
        require(self.advantage in ADVANTAGE_MIN_GROUP, "grpo.advantage", f"unknown estimator {self.advantage!r}",
                f"use one of {', '.join(ADVANTAGE_MIN_GROUP)}")
        need = ADVANTAGE_MIN_GROUP[self.advantage]
        require(self.group_size >= need, "grpo.group_size",
                f"advantage {self.advantage} needs >= {need} samples per prompt (its baseline comes from the "
                f"other samples of the group), got {self.group_size}",
                "set grpo.group_size >= 2 (e.g. 8) or grpo.advantage=reinforce_pp")
        require(self.advantage_eps > 0, "grpo.advantage_eps", "must be positive", "use 1e-6")

    def _check_policy_loss(self) -> None:
        require(self.loss_agg in LOSS_AGGS, "grpo.loss_agg", f"unknown aggregation {self.loss_agg!r}",
                f"use one of {', '.join(LOSS_AGGS)}")
        require(self.loss_norm_length is None or self.loss_norm_length >= 1, "grpo.loss_norm_length",
                "must be >= 1", "use null (= max_new_tokens)")
        require(0 < self.clip_low < 1, "grpo.clip_low", "must be in (0, 1)", "use 0.2")
        require(self.clip_high >= self.clip_low, "grpo.clip_high",
                f"{self.clip_high} is below clip_low={self.clip_low} (clip-higher widens the upper side)",
                "use 0.28 (DAPO) or clip_high=clip_low for symmetric clipping")
        require(self.kl_coef >= 0, "grpo.kl_coef", "must be >= 0", "use 0.04, or 0 for no KL")
        require(self.kl_mode in KL_MODES, "grpo.kl_mode", f"unknown {self.kl_mode!r}", "use loss or reward")
        require(self.kl_kind in KL_KINDS, "grpo.kl_kind", f"unknown estimator {self.kl_kind!r}",
                f"use one of {', '.join(KL_KINDS)}")
        require(self.entropy_coef >= 0, "grpo.entropy_coef", "must be >= 0", "use 0.0")

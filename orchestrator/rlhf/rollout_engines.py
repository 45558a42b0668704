"""Rollout engines: what samples the responses of an RL step (``rollout.engine=hf|vllm``).

An engine lives inside the actor role (one per rank, ``rollout.layout=colocated``) or in a rollout role of its
own (``separate``: :class:`orchestrator.rlhf.engine_role.RolloutEngineRole`, fed by :mod:`.weight_sync`);
either way it is used through three calls:

* ``generate(prompts, seed, eos_id, pad_id, sampling)`` -> ``{"responses": [B, R] long, "logprobs": [B, R]
  float or None}`` for left-padded prompts; ``logprobs`` are the engine's own log-probabilities of the
  sampled tokens (None when the engine *is* the actor, as ``hf``).
* ``sync(named_params, version)``: push the actor's current weights into the engine and record which
  actor version they are. The role counts its optimizer steps and checks ``engine.version`` against that
  count before every rollout (:func:`check_version`), so a stale engine can never generate silently.
* ``close()``.

``hf`` is the actor's own ``generate`` on the live module (weights shared, so ``sync`` only records the
version). ``vllm`` is a vLLM ``LLM`` built in-process from the actor's weights (saved once to a temporary
HF directory) with the engine core in the same process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), so a sync
is an in-process ``load_weights`` of the (ZeRO-gathered) full parameters, no copy through a file or socket.

Seeding: ``hf`` seeds torch from (seed, rank) before a batch, so a step is reproducible for the same
sharding; ``vllm`` gives every request its own seed derived from (seed, rank, row), so a resumed or
recovered step samples the same responses on the same engine build and hardware. vLLM does not
promise bit-identical sampling across versions, batch compositions on GPU or devices, so a resumed
vLLM run may diverge from an uninterrupted one there (the run is tagged ``rollout.reproducible=false``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Optional

import torch

_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
CPU_KV_CACHE_GIB = 0.25
"""KV cache on CPU when ``rollout.kv_cache_gib`` is null (see its docstring)."""


class StaleRolloutEngineError(RuntimeError):
    """The engine holds older weights than the actor: a weight sync was skipped."""


@dataclass(frozen=True)
class Sampling:
    """Sampling settings of one rollout (from ``ppo.*`` or ``grpo.*``)."""

    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0


def sampling_from(opts: Any) -> Sampling:
    """:class:`Sampling` from a kind's options (``cfg.ppo`` or ``cfg.grpo``)."""
    return Sampling(opts.max_new_tokens, opts.temperature, opts.top_p)


def check_version(engine: Any, actor_version: int) -> None:
    """Raise :class:`StaleRolloutEngineError` unless the engine holds the actor's current weights."""
    if engine.version != actor_version:
        raise StaleRolloutEngineError(
            f"rollout engine {engine.name!r} holds weights version {engine.version} but the actor is at version "
            f"{actor_version}: the weight sync after the last update was skipped (the driver calls sync_rollout_engines after every "
            "update)")


def request_seed(seed: int, rank: int, row: int) -> int:
    """Per-request seed of row ``row`` of rank ``rank``'s shard (fits vLLM's 63-bit seed)."""
    return (seed * 1_000_003 + rank * 100_003 + row) % (2**63 - 1)


def full_named_parameters(module: torch.nn.Module, zero_stage: int) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, full tensor)`` of every parameter; ZeRO-3 shards are gathered one parameter at a time (so
    peak memory is one full parameter, not the model). Stages 0-2 keep whole parameters on every rank."""
    if zero_stage < 3:
        for name, p in module.named_parameters():
            yield name, p.detach()
        return
    import deepspeed

    for name, p in module.named_parameters():
        with deepspeed.zero.GatheredParameters([p], modifier_rank=None):
            yield name, p.detach().clone()


class HFEngine:
    """The actor's own ``generate`` (KV cache, torch sampling): the default, and the reference for parity."""

    name = "hf"

    def __init__(self, model: torch.nn.Module, rank: int = 0) -> None:
        self.model, self.rank, self.version = model, rank, 0

    @torch.no_grad()
    def generate(self, prompts: dict[str, torch.Tensor], seed: int, eos_id: int | list[int], pad_id: int,
                 sampling: Sampling) -> dict[str, Optional[torch.Tensor]]:
        torch.manual_seed(seed * 1000 + self.rank)
        self.model.eval()
        out = self.model.generate(
            input_ids=prompts["input_ids"], attention_mask=prompts["attention_mask"], do_sample=True,
            temperature=sampling.temperature, top_p=sampling.top_p, top_k=0, max_new_tokens=sampling.max_new_tokens,
            eos_token_id=eos_id, pad_token_id=pad_id, use_cache=True)
        return {"responses": out[:, prompts["input_ids"].shape[1]:], "logprobs": None}

    def sync(self, named_params: Iterable[tuple[str, torch.Tensor]], version: int) -> None:  # noqa: ARG002
        self.version = version  # same module: the weights are already the actor's

    def close(self) -> None:
        pass


class VLLMEngine:
    """A vLLM ``LLM`` in this process, built from ``model``'s weights. The colocated actor and the separate
    rollout role both use this class (one build, one ``generate``, one ``reload_weights`` sync); only where
    the weights of a sync come from differs (the actor's own parameters, or a broadcast).

    The engine is always built from a fresh ``save_pretrained`` of the module, never from a model directory
    as found: its checkpoint must hold exactly the keys a sync sends (``named_parameters``). An export that
    also stores a tied ``lm_head.weight`` (the SFT job's do) makes vLLM's layerwise reload restore stale
    tensors on every later sync (measured: |delta log-prob| 0.95 after one perturbed sync; 8e-7 when built
    from the module).

    Args:
        model: the actor's HF module (its config and current weights seed the engine).
        rollout: the ``rollout`` config group.
        max_model_len: longest sequence (prompt + response), ``model.seq_len``.
        max_num_seqs: most requests batched at once (the rank's share of a rollout).
        seed: engine seed (per-request seeds decide the samples).
        precision: ``fp32``/``bf16``/``fp16`` (``parallel.resolved_precision``).
        use_gpu: whether the engine runs on a GPU (the KV cache is then sized by ``gpu_memory_utilization``).
        rank: the actor rank (part of each request seed).
    """

    name = "vllm"

    def __init__(self, model: torch.nn.Module, rollout: Any, *, max_model_len: int, max_num_seqs: int, seed: int,
                 precision: str, use_gpu: bool, rank: int = 0) -> None:
        # the engine core in this process: in-process load_weights, and no child process to spawn
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")  # share the cores the role was given
        from vllm import LLM

        self.rank = rank
        kv_gib = rollout.kv_cache_gib if rollout.kv_cache_gib is not None or use_gpu else CPU_KV_CACHE_GIB
        kv_bytes = None if kv_gib is None else int(kv_gib * 2**30)
        tmp = tempfile.mkdtemp(prefix="vllm-init-")
        try:
            model.save_pretrained(tmp, safe_serialization=True)
            self.llm = LLM(model=tmp, skip_tokenizer_init=True, dtype=_DTYPES[precision], seed=seed,
                           gpu_memory_utilization=rollout.gpu_memory_utilization, enforce_eager=rollout.enforce_eager,
                           max_model_len=max_model_len, max_num_seqs=max(1, max_num_seqs),
                           enable_prefix_caching=False, tensor_parallel_size=1, kv_cache_memory_bytes=kv_bytes)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.llm.update_weight_version("0")

    @property
    def version(self) -> int:
        """The actor weights version the engine holds, as vLLM itself records it (``get_weight_version``)."""
        return int(self.llm.get_weight_version())

    @version.setter
    def version(self, value: int) -> None:
        self.llm.update_weight_version(str(int(value)))

    def generate(self, prompts: dict[str, torch.Tensor], seed: int, eos_id: int | list[int], pad_id: int,
                 sampling: Sampling) -> dict[str, Optional[torch.Tensor]]:
        """One request per row (a grpo group is ``group_size`` consecutive rows of one prompt), each with its
        own seed, so a group's samples differ and a recomputed step draws the same ones."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        stops = [eos_id] if isinstance(eos_id, int) else list(eos_id)  # a chat template's end of turn too
        reqs, params = [], []
        for row, (ids, att) in enumerate(zip(prompts["input_ids"], prompts["attention_mask"])):
            reqs.append(TokensPrompt(prompt_token_ids=ids[att.bool()].tolist()))
            params.append(SamplingParams(
                n=1, temperature=sampling.temperature, top_p=sampling.top_p, top_k=0,
                max_tokens=sampling.max_new_tokens, seed=request_seed(seed, self.rank, row), logprobs=0,
                stop_token_ids=stops, detokenize=False))
        outs = self.llm.generate(reqs, params, use_tqdm=False)
        B, R = len(outs), max(1, max(len(o.outputs[0].token_ids) for o in outs))
        responses = torch.full((B, R), pad_id, dtype=torch.long)
        logprobs = torch.zeros((B, R), dtype=torch.float32)
        for i, o in enumerate(outs):
            c = o.outputs[0]
            ids = list(c.token_ids)
            responses[i, :len(ids)] = torch.tensor(ids, dtype=torch.long)
            logprobs[i, :len(ids)] = torch.tensor([lp[t].logprob for t, lp in zip(ids, c.logprobs)])
        return {"responses": responses, "logprobs": logprobs}

    def sync(self, named_params: Iterable[tuple[str, torch.Tensor]], version: int) -> None:
        """In-process ``reload_weights`` of the worker (vLLM maps HF names, tied heads and fused qkv/gate-up, and
        redoes its kernel-format processing, e.g. the CPU backend's repacked linear weights; a plain
        ``model.load_weights`` fails there because the processed parameters lost their loaders)."""
        import logging

        weights = list(named_params)
        # its "Failed to load weights" warnings name the tied head and the rotary cache, handled right below
        layerwise = logging.getLogger("vllm.model_executor.model_loader.reload.layerwise")
        level = layerwise.level
        layerwise.setLevel(logging.ERROR)
        try:
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights, "is_checkpoint_format": True})
        finally:
            layerwise.setLevel(level)
        self.llm.apply_model(_refresh_tied_head)
        self.llm.reset_prefix_cache()
        self.version = version

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        del llm


def _refresh_tied_head(model: torch.nn.Module) -> None:
    """Re-tie a tied LM head to the reloaded embedding and redo its kernel processing.

    The checkpoint has no separate head weight when embeddings are tied, so vLLM's layerwise reload reports
    "ParallelLMHead: Failed to load weights" and puts the head's *old* tensors back; on CPU the head also
    keeps its own packed copy (``cpu_linear``) built at load time. Without this the engine would sample with
    the new body and the old head (measured: |delta log-prob| up to 1.0 after one perturbation).
    """
    head, config = getattr(model, "lm_head", None), getattr(model, "config", None)
    if head is None or not getattr(config, "tie_word_embeddings", False):
        return
    embedding = next(m for n, m in model.named_modules() if n.rpartition(".")[2] in ("embed_tokens", "wte"))
    head.weight = embedding.weight
    head.quant_method.process_weights_after_loading(head)


def make_engine(cfg: Any, model: torch.nn.Module, rank: int, max_num_seqs: int) -> Any:
    """The engine ``cfg.rollout.engine`` names, built from ``model`` (the actor's module, or for the separate
    rollout role the same initial policy loaded there)."""
    r = getattr(cfg, "rollout", None)  # a kind without the group generates with hf
    if r is None or r.engine == "hf":
        return HFEngine(model, rank)
    seed = cfg.trainer.seed if r.seed is None else r.seed
    return VLLMEngine(model, r, max_model_len=cfg.model.seq_len, max_num_seqs=max_num_seqs, seed=seed,
                      precision=cfg.parallel.resolved_precision(cfg.cluster.use_gpu), use_gpu=cfg.cluster.use_gpu,
                      rank=rank)

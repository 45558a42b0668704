"""Pipeline parallelism: a transformers Llama/GPT-2 causal LM as a DeepSpeed ``PipelineModule``.

The model is first built as usual (:func:`orchestrator.models.build.build_causal_lm`, same seed, so every
weight starts identical to the non-pipelined run); its submodules are then re-expressed as a layer list::

    embedding (tied key "embed")  [GPT-2: + position embedding]  block_0 ... block_{N-1}  final norm  head

The head reuses the embedding weight through ``TiedLayerSpec`` when ``tie_word_embeddings`` is set
(DeepSpeed all-reduces the tied gradient between the first and the last stage), else it is the model's own
``lm_head``. Between stages only the hidden state ``[batch, seq, hidden]`` travels; each block rebuilds
the causal mask and (Llama) the rotary embeddings from it, exactly as the HF model does. The loss is the
HF causal-LM loss, so per-step losses equal the plain model's.

Micro-batches are the gradient-accumulation steps: :func:`pipeline_train_step` hands all of one step's
micro-batches to ``engine.train_batch`` (1F1B schedule, optimizer step at the end).

The stage's HF model is kept (unregistered) on the PipelineModule so that :func:`pipeline_state_dict`
can gather every stage's weights back under their Hugging Face names for the export.

Public API:
    to_pipeline_module(model, cfg, plan) -> deepspeed.pipe.PipelineModule
    is_pipeline_engine(engine) -> bool
    pipeline_train_step(engine, micro_batches) -> float            (mean loss of the step, all ranks)
    pipeline_stage_metrics(engine) -> dict                          (collective; per-stage timings)
    pipeline_eval_loss(engine, micro_batch) -> torch.Tensor         (mean loss, all ranks)
    pipeline_state_dict(engine, rank) -> Optional[dict]             (collective; full HF state on rank 0)
    hf_model_of(engine) -> transformers.PreTrainedModel
    partition_method(name) -> str
"""

from __future__ import annotations

import time
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

_BLOCK_TYPE = "_Block"


def partition_method(name: str) -> str:
    """DeepSpeed's ``partition_method`` for ``parallel.pipeline_partition``: ``parameters`` balances
    parameter counts; ``uniform`` balances the number of transformer blocks per stage."""
    return "parameters" if name == "parameters" else f"type:{_BLOCK_TYPE}"


class _WordEmbed(nn.Module):
    """Stage-0 token embedding (also the tied LM head on the last stage)."""

    def __init__(self, hf: nn.Module) -> None:
        super().__init__()
        self.embed = hf.get_input_embeddings()

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed(input_ids)


class _PosEmbed(nn.Module):
    """GPT-2's learned position embedding and embedding dropout."""

    def __init__(self, hf: nn.Module) -> None:
        super().__init__()
        self.wpe, self.drop = hf.transformer.wpe, hf.transformer.drop

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
        return self.drop(hidden + self.wpe(pos))


class _Block(nn.Module):
    """One transformer block; rebuilds the causal mask (and Llama's rotary embedding) from the hidden state."""

    def __init__(self, hf: nn.Module, index: int) -> None:
        super().__init__()
        self.arch = hf.config.model_type
        self.config = hf.config
        if self.arch == "gpt2":
            self.layer = hf.transformer.h[index]
            self.rotary = None
        else:
            self.layer = hf.model.layers[index]
            self.rotary = hf.model.rotary_emb

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        from transformers.masking_utils import create_causal_mask

        pos = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
        mask = create_causal_mask(config=self.config, inputs_embeds=hidden, attention_mask=None,
                                  past_key_values=None, position_ids=pos)
        if self.arch == "gpt2":
            out = self.layer(hidden, None, mask, None, position_ids=pos, use_cache=False)
        else:
            out = self.layer(hidden, attention_mask=mask, position_embeddings=self.rotary(hidden, position_ids=pos),
                             position_ids=pos, use_cache=False)
        return out[0] if isinstance(out, tuple) else out


class _Norm(nn.Module):
    def __init__(self, hf: nn.Module) -> None:
        super().__init__()
        self.norm = hf.transformer.ln_f if hf.config.model_type == "gpt2" else hf.model.norm

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.norm(hidden)


class _Head(nn.Module):
    """Untied LM head."""

    def __init__(self, hf: nn.Module) -> None:
        super().__init__()
        self.head = hf.get_output_embeddings()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.head(hidden)


def _tied_head(module: _WordEmbed, hidden: torch.Tensor) -> torch.Tensor:
    return F.linear(hidden, module.embed.weight)


def layer_specs(hf: nn.Module) -> list[Any]:
    """The PipelineModule layer list of a HF Llama/GPT-2 causal LM (see the module docstring)."""
    from deepspeed.pipe import LayerSpec, TiedLayerSpec

    arch = hf.config.model_type
    if arch not in ("llama", "gpt2"):
        raise ValueError(f"pipeline parallelism supports llama and gpt2 models, not {arch!r}")
    tied = bool(getattr(hf.config, "tie_word_embeddings", False))
    layers: list[Any] = [TiedLayerSpec("embed", _WordEmbed, hf, tied_weight_attr="embed.weight") if tied
                         else LayerSpec(_WordEmbed, hf)]
    if arch == "gpt2":
        layers.append(LayerSpec(_PosEmbed, hf))
    layers += [LayerSpec(_Block, hf, i) for i in range(hf.config.num_hidden_layers)]
    layers.append(LayerSpec(_Norm, hf))
    layers.append(TiedLayerSpec("embed", _WordEmbed, hf, forward_fn=_tied_head, tied_weight_attr="embed.weight")
                  if tied else LayerSpec(_Head, hf))
    return layers


def data_pipe_topology(dp: int, pp: int) -> Any:
    """Ranks laid out ``rank = dp_rank * pp + stage``: one pipeline is ``pp`` consecutive ranks (node-local
    where possible) and the data-parallel rank is ``rank // pp``, as the samplers assume."""
    from deepspeed.runtime.pipe.topology import ProcessTopology

    return ProcessTopology(axes=["data", "pipe"], dims=[dp, pp])


def to_pipeline_module(model: nn.Module, cfg: Any, plan: Any) -> Any:
    """Wrap a built HF causal LM as a ``PipelineModule`` of ``plan.pp_size`` stages (collective)."""
    from deepspeed.pipe import PipelineModule
    from transformers.loss.loss_utils import ForCausalLMLoss

    vocab = model.config.vocab_size

    def loss_fn(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return ForCausalLMLoss(logits, labels, vocab_size=vocab)

    pipe = PipelineModule(layers=layer_specs(model), loss_fn=loss_fn,
                          topology=data_pipe_topology(plan.dp_size, plan.pp_size),
                          partition_method=partition_method(cfg.parallel.pipeline_partition),
                          activation_checkpoint_interval=0)  # HF blocks checkpoint themselves when enabled
    pipe._hf_ref = [model]  # a list: not registered, so the stage holds only its own layers' parameters
    return pipe


def is_pipeline_engine(engine: Any) -> bool:
    return bool(getattr(engine, "pipeline_parallelism", False))


def hf_model_of(engine: Any) -> nn.Module:
    """The Hugging Face model behind an engine (the pipeline's source model for a PipelineEngine)."""
    module = engine.module
    ref = getattr(module, "_hf_ref", None)
    return ref[0] if ref else module


def _batch(mb: dict[str, torch.Tensor], device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    return mb["input_ids"].to(device), mb["labels"].to(device)


def pipeline_train_step(engine: Any, micro_batches: list[dict[str, torch.Tensor]]) -> float:
    """One optimizer step over this pipeline's micro-batches (1F1B); returns the step's mean loss (dp
    average, broadcast to every stage). Records the stage's compute time on the engine for the metrics."""
    assert len(micro_batches) == engine.gradient_accumulation_steps(), "micro-batches = grad accumulation"
    _install_forward_timer(engine)
    engine._orch_fwd_s = 0.0
    t0 = time.perf_counter()
    loss = engine.train_batch(iter([_batch(mb, engine.device) for mb in micro_batches]))
    engine._orch_step_s = time.perf_counter() - t0
    return float(loss)


def _install_forward_timer(engine: Any) -> None:
    """Forward hooks on this stage's module that add up its forward compute time per step."""
    if getattr(engine, "_orch_timer", False):
        return
    module = engine.module

    def pre(_m: Any, _a: Any) -> None:
        if module.training:
            engine._orch_fwd_t0 = time.perf_counter()

    def post(_m: Any, _a: Any, _o: Any) -> None:
        if module.training:
            engine._orch_fwd_s += time.perf_counter() - engine._orch_fwd_t0

    module.register_forward_pre_hook(pre)
    module.register_forward_hook(post)
    engine._orch_timer = True


def pipeline_stage_metrics(engine: Any) -> dict[str, float]:
    """Collective: per-stage timings of the last step (data-parallel rank 0's pipeline), for every rank:
    ``pipe_stage<i>_forward_s`` (forward compute of the stage's layers) and ``pipe_stage<i>_step_s``
    (wall time of ``train_batch`` on that stage, bubbles and communication included)."""
    import torch.distributed as dist

    pp = engine.num_stages
    buf = torch.zeros(2 * pp, dtype=torch.float64)
    if engine.grid.get_data_parallel_rank() == 0:
        buf[engine.stage_id] = getattr(engine, "_orch_fwd_s", 0.0)
        buf[pp + engine.stage_id] = getattr(engine, "_orch_step_s", 0.0)
    dev = engine.device if dist.get_backend() == "nccl" else "cpu"
    buf = buf.to(dev)
    dist.all_reduce(buf)
    buf = buf.cpu()
    out = {f"pipe_stage{i}_forward_s": float(buf[i]) for i in range(pp)}
    out.update({f"pipe_stage{i}_step_s": float(buf[pp + i]) for i in range(pp)})
    return out


def pipeline_eval_loss(engine: Any, mb: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean loss of one micro-batch through the pipeline (dp-averaged, on every stage; collective)."""
    loss = engine.eval_batch(iter([_batch(mb, engine.device)]), num_micro_batches=1)
    return loss.detach().float().cpu()


def pipeline_state_dict(engine: Any, rank: int) -> Optional[dict[str, torch.Tensor]]:
    """Collective: every stage's parameters (and persistent buffers) under their HF names, on rank 0."""
    import torch.distributed as dist

    hf = hf_model_of(engine)
    names: dict[int, list[str]] = {}  # a tied weight has several HF names
    for n, t in list(hf.named_parameters(remove_duplicate=False)) + list(hf.named_buffers(remove_duplicate=False)):
        names.setdefault(id(t), []).append(n)
    mine: dict[str, torch.Tensor] = {}
    local = engine.module
    for t in list(local.parameters()) + [b for _, b in local.named_buffers()]:
        for n in names.get(id(t), []):
            mine[n] = t.detach().cpu().clone()
    first_dp = engine.grid.get_data_parallel_rank() == 0
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, mine if first_dp else {})
    if rank != 0:
        return None
    full: dict[str, torch.Tensor] = {}
    for part in parts:
        for k, v in part.items():
            full.setdefault(k, v)
    persistent = set(hf.state_dict().keys())
    missing = persistent - set(full)
    assert not missing, f"pipeline export lost {sorted(missing)}"
    return {k: v for k, v in full.items() if k in persistent}

"""Export a (possibly ZeRO-3 partitioned) DeepSpeed engine as a plain Hugging Face directory.

Public API:
    export_hf(engine, out_dir, *, rank, tokenizer_dir=None) -> Optional[Path]   (collective)
    save_pretrained_atomic(model, out_dir, tokenizer_dir) -> Path                (one process)
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Optional

import torch

from orchestrator.core.dist import barrier
from orchestrator.core.files import copy_tokenizer


def gathered_state_dict(engine: Any, rank: int) -> Optional[dict[str, torch.Tensor]]:
    """The full state dict on rank 0 (None elsewhere). Collective for ZeRO-3: every rank must call it."""
    from orchestrator.engine.pipe import is_pipeline_engine, pipeline_state_dict

    if is_pipeline_engine(engine):  # every stage's layers, under their HF names
        return pipeline_state_dict(engine, rank)
    if engine.autotp_size() > 1:  # AutoTP shards (and ZeRO-3 partitions) gathered into full tensors
        from orchestrator.engine.tp import tp_state_dict

        return tp_state_dict(engine)
    module = engine.module
    if engine.zero_optimization_partition_weights():
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
            return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()} if rank == 0 else None
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()} if rank == 0 else None


def export_hf(engine: Any, out_dir: str | Path, *, rank: int, tokenizer_dir: Optional[str | Path] = None) -> Optional[Path]:
    """Write ``config.json``, ``model.safetensors`` (+ generation config) and the tokenizer to ``out_dir``
    so that ``AutoModelForCausalLM.from_pretrained(out_dir)`` loads and generates with it.

    Written into a temporary sibling and renamed, so ``out_dir`` is either the previous export or the new
    one. Collective; returns the directory on rank 0, None on other ranks.
    """
    state = gathered_state_dict(engine, rank)
    if rank != 0:
        barrier()
        return None
    out = Path(out_dir)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    from orchestrator.engine.pipe import hf_model_of

    module = hf_model_of(engine)  # the HF model (a PipelineEngine's module is a PipelineModule)
    module.save_pretrained(str(tmp), state_dict=state, safe_serialization=True)
    _commit(tmp, out, tokenizer_dir)
    barrier()
    return out


def save_pretrained_atomic(model: Any, out_dir: str | Path, tokenizer_dir: Optional[str | Path]) -> Path:
    """``model.save_pretrained`` (safetensors) plus the tokenizer into a temporary sibling, then renamed:
    ``out_dir`` is the previous export or the new one, never half of one. Single process (rank 0)."""
    out = Path(out_dir)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    _commit(tmp, out, tokenizer_dir)
    return out


def _commit(tmp: Path, out: Path, tokenizer_dir: Optional[str | Path]) -> None:
    """Add the tokenizer to the finished ``tmp`` directory and swap it in for ``out``."""
    if tokenizer_dir is not None and Path(tokenizer_dir).is_dir():
        copy_tokenizer(tokenizer_dir, tmp)
    old = out.with_name(f".{out.name}.old{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)

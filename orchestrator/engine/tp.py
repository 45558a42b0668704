"""Tensor parallelism through DeepSpeed AutoTP training (``"tensor_parallel": {"autotp_size": tp}``).

DeepSpeed 0.19.8 shards the HF model's linear layers itself when the config carries ``autotp_size``
(column-parallel q/k/v/gate/up, row-parallel o/down with an all-reduce). What it does not do for a
config-only setup is tell the batch-size check about the tensor-parallel ranks: without an ``mpu`` its
``DeepSpeedConfig`` counts every rank as a data-parallel replica (``train_batch_size`` would have to be
``micro * accum * world``). :func:`init_tp_groups` therefore builds DeepSpeed's own (data, tensor) mesh
first and hands ``deepspeed.utils.groups`` as the ``mpu``: the batch check then sees ``dp = world / tp``,
ZeRO partitions over the data-parallel group only, and TP groups are ``tp`` consecutive ranks (the
tensor axis is the innermost one), so the data-parallel rank is ``rank // tp``.

Public API:
    init_tp_groups(tp_size, use_gpu) -> mpu        (collective; before deepspeed.initialize)
    tp_state_dict(engine) -> Optional[dict]        (collective; full weights on rank 0)
"""

from __future__ import annotations

from typing import Any, Optional

import torch


def init_tp_groups(tp_size: int, use_gpu: bool) -> Any:
    """Create DeepSpeed's (data, tensor) process groups; returns the ``mpu`` for ``deepspeed.initialize``."""
    import deepspeed
    from deepspeed.utils import groups

    deepspeed.init_distributed(dist_backend="nccl" if use_gpu else "gloo", dist_init_required=False)
    groups._init_tp_mesh_device(tensor_model_parallel_size=tp_size)
    assert groups.get_tensor_model_parallel_world_size() == tp_size
    return groups


def tp_state_dict(engine: Any) -> Optional[dict[str, torch.Tensor]]:
    """Collective: the AutoTP shards gathered into full tensors, on global rank 0 (None elsewhere).

    ZeRO-3 partitions are gathered too (DeepSpeed's consolidated state dict handles both)."""
    state = engine._consolidated_16bit_state_dict()  # "16bit" by name; it keeps the parameters' dtype
    if state is None:
        return None
    return {k: v.detach().cpu().clone() for k, v in state.items()}

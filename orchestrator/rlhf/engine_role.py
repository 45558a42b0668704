"""The rollout role of ``rollout.layout=separate``: one vLLM engine per rank, in its own placement bundle.

Each rank holds a :class:`~.rollout_engines.VLLMEngine` built from the policy directory (the actor's initial
weights, so both start at version 0) and generates its contiguous share of every rollout. After every actor
update it receives the new weights from actor rank 0 over the standalone :class:`~.weight_sync.WeightGroup`
and loads them with the engine's own ``sync`` (``reload_weights``, as colocated). Before every rollout it
compares its weights version with the actor's, which the driver passes along
(:func:`~.rollout_engines.check_version`), so an engine that missed a sync raises instead of sampling from
old weights.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch

from orchestrator.rlhf.roles import RoleBase


class RolloutEngineRole(RoleBase):
    """Rank ``rank`` of ``world_size`` rollout engines (``master`` is unused: engines form no group of their own;
    vLLM makes its private one)."""

    role = "rollout"

    def __init__(self, cfg: Any, model_dir: str, rank: int = 0, world_size: int = 1,
                 master: Optional[str] = None) -> None:
        super().__init__(cfg, rank, world_size, master)
        from transformers import AutoModelForCausalLM

        from orchestrator.rlhf.rollout_engines import make_engine

        opts = getattr(cfg, cfg.kind)
        rows = opts.rollout_batch_size * getattr(opts, "group_size", 1)
        # the same module the actor loads, so the engine is built exactly as the colocated one (VLLMEngine's note)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        self.rollout_engine = make_engine(cfg, model, rank, math.ceil(rows / world_size))
        del model
        self.group: Any = None

    def init_weight_group(self, master: str, world_size: int) -> int:
        """Join the broadcast group as group rank ``1 + rank`` (collective with actor rank 0 and the other engines)."""
        from orchestrator.rlhf.weight_sync import WeightGroup

        self.close_weight_group()
        self.group = WeightGroup(master, 1 + self.rank, world_size, self.cfg.cluster.use_gpu)
        return self.group.rank

    def close_weight_group(self) -> None:
        if self.group is not None:
            self.group.close()
            self.group = None

    def version(self) -> int:
        return self.rollout_engine.version

    def rollout(self, prompts: dict[str, torch.Tensor], seed: int, eos_id: int | list[int], pad_id: int,
                actor_version: int) -> dict[str, Any]:
        """Sampled ``responses`` and the engine's ``logprobs`` of this rank's rows; raises
        ``StaleRolloutEngineError`` when the engine does not hold the actor's version ``actor_version``."""
        from orchestrator.rlhf.rollout_engines import check_version, sampling_from

        check_version(self.rollout_engine, actor_version)
        return self.rollout_engine.generate(prompts, seed, eos_id, pad_id, sampling_from(getattr(self.cfg, self.cfg.kind)))

    def receive_weights(self, meta: list[tuple[str, list[int], str]], version: int) -> int:
        """Receive the actor's weights (broadcast from actor rank 0) and load them; returns the new version."""
        if self.group is None:
            raise RuntimeError("rollout engine has no weight group: init_weight_group was not called")
        self.rollout_engine.sync(self.group.receive(meta), version)
        return self.rollout_engine.version

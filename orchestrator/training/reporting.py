"""The only door from a training loop to Ray: a small reporting interface.

:class:`RayTrainReporter` imports ``ray.train`` lazily (inside a Ray Train worker); :class:`LocalReporter`
serves single-process runs (unit tests, the bare-DeepSpeed benchmark baseline).
"""

from __future__ import annotations

import os
from typing import Any, Optional, Protocol


class Reporter(Protocol):
    """What a training loop may ask of the orchestrator."""

    world_rank: int
    world_size: int
    local_rank: int
    node_id: str
    """The (Ray) node this rank runs on."""

    def report(self, metrics: dict[str, Any], checkpoint_dir: Optional[str] = None) -> None:
        """Collective (every rank calls it the same number of times): publish metrics and, when given,
        a committed checkpoint directory."""


class LocalReporter:
    """Single-process reporter: ranks from ``torch.distributed`` (or 0/1), reports kept in memory."""

    def __init__(self) -> None:
        import torch.distributed as dist

        on = dist.is_available() and dist.is_initialized()
        self.world_rank = dist.get_rank() if on else 0
        self.world_size = dist.get_world_size() if on else 1
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.node_id = "local"
        self.reports: list[tuple[dict[str, Any], Optional[str]]] = []

    def report(self, metrics: dict[str, Any], checkpoint_dir: Optional[str] = None) -> None:
        self.reports.append((dict(metrics), checkpoint_dir))


class RayTrainReporter:
    """Reports to Ray Train. Checkpoints are already committed in the run's checkpoint root (inside Ray's
    run directory, on storage every node reaches): they are registered where they are, never copied."""

    def __init__(self) -> None:
        import ray
        import ray.train

        ctx = ray.train.get_context()
        self.world_rank = ctx.get_world_rank()
        self.world_size = ctx.get_world_size()
        self.local_rank = ctx.get_local_rank()
        self.node_id = ray.get_runtime_context().get_node_id()

    def report(self, metrics: dict[str, Any], checkpoint_dir: Optional[str] = None) -> None:
        import ray.train

        if checkpoint_dir is None or self.world_rank != 0:
            ray.train.report(metrics, checkpoint=None)
            return
        ckpt = ray.train.Checkpoint.from_directory(checkpoint_dir)
        name = os.path.basename(checkpoint_dir)
        ray.train.report(metrics, checkpoint=ckpt, checkpoint_dir_name=name,
                         checkpoint_upload_fn=lambda c, _name: c, delete_local_checkpoint_after_upload=False)

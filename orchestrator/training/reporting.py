"""The only door from a training loop to Ray: a small reporting interface.

:class:`GroupReporter` serves a rank of the job's worker group (:mod:`orchestrator.runtime.worker_group`);
:class:`LocalReporter` single-process runs (unit tests, the bare-DeepSpeed benchmark baseline).
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


class GroupReporter:
    """A rank of the job's worker group (:mod:`orchestrator.runtime.worker_group`). Checkpoints are already
    committed in the run's checkpoint root (on storage every node reaches): a report only remembers the
    newest one and the last metrics, which this rank's function returns to the driver."""

    def __init__(self) -> None:
        from orchestrator.runtime.worker_group import rank_context

        ctx = rank_context()
        self.world_rank = ctx.rank
        self.world_size = ctx.world_size
        self.local_rank = ctx.local_rank
        self.node_id = ctx.node_id
        self.metrics: dict[str, Any] = {}
        self.checkpoint_dir: Optional[str] = None

    def report(self, metrics: dict[str, Any], checkpoint_dir: Optional[str] = None) -> None:
        self.metrics = dict(metrics)
        if checkpoint_dir is not None:
            self.checkpoint_dir = checkpoint_dir

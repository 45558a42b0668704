"""``cluster`` group: where the Ray workers run (``address=null`` starts Ray in-process)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from orchestrator.config.base import Frozen
from orchestrator.config.errors import require


@dataclass
class ClusterConfig(Frozen):
    address: Optional[str] = None
    """Ray address: null starts a local Ray runtime in-process (embedded default); ``auto`` joins a
    running local cluster; ``ray://host:10001`` or a dashboard URL ``http://host:8265`` for remote."""
    num_workers: int = 2
    """Training workers (Ray Train ranks); world size = dp * tp * pp."""
    use_gpu: bool = False
    """One GPU per worker with NCCL; false trains on CPU with gloo and ``DS_ACCELERATOR=cpu``."""
    cpus_per_worker: int = 1
    """CPU cores reserved for each worker (data loading and, on CPU, the math itself)."""
    num_cpus: Optional[int] = None
    """CPUs of the in-process local Ray (address=null); null = all cores of this machine."""
    name: str = "local"
    """Preset name; matches ``cluster/<name>...`` definitions for deployable clusters."""
    storage_path: Optional[str] = None
    """Shared filesystem or object-store path for checkpoints on multi-node clusters; null = output_dir."""
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment variables for workers (secret values are never logged)."""

    def __post_init__(self) -> None:
        require(self.num_workers >= 1, "cluster.num_workers", "must be >= 1", "set cluster.num_workers=1 or more")
        require(self.cpus_per_worker >= 1, "cluster.cpus_per_worker", "must be >= 1", "set it to 1 or more")
        require(self.num_cpus is None or self.num_cpus >= 1, "cluster.num_cpus", "must be >= 1 or null",
                "set cluster.num_cpus=null to use every core")

"""``cluster`` group: where the Ray workers run (``address=null`` starts Ray in-process)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from orchestrator.config.base import Frozen
from orchestrator.config.errors import require


STORAGE_SCHEMES = ("file", "s3", "gs", "gcs", "abfs", "abfss", "hdfs", "viewfs")
"""URI schemes of ``cluster.storage_path`` that pyarrow's ``FileSystem.from_uri`` opens
(:mod:`orchestrator.engine.storage`)."""

PLACEMENTS = ("pack", "spread")
"""Values of ``cluster.placement`` (Ray placement strategies ``PACK`` / ``SPREAD``)."""


@dataclass
class ClusterConfig(Frozen):
    address: Optional[str] = None
    """Ray address: null starts a local Ray runtime in-process (embedded default); ``auto`` joins a
    running local cluster; ``ray://host:10001`` or a dashboard URL ``http://host:8265`` for remote."""
    num_workers: int = 2
    """Training workers (ranks of the worker group, one Ray actor each); world size = dp * tp * pp."""
    use_gpu: bool = False
    """One GPU per worker with NCCL; false trains on CPU with gloo and ``DS_ACCELERATOR=cpu``."""
    cpus_per_worker: int = 1
    """CPU cores reserved for each worker (data loading and, on CPU, the math itself)."""
    num_cpus: Optional[int] = None
    """CPUs of the in-process local Ray (address=null); null = all cores of this machine."""
    name: str = "local"
    """Preset name; matches ``cluster/<name>...`` definitions for deployable clusters."""
    placement: str = "pack"
    """Where the training ranks go: ``pack`` fills as few nodes as hold them (consecutive ranks together:
    fastest collectives), ``spread`` puts each rank on a different node while there
    are free nodes (survives a node loss with the least work lost, spreads host memory and disk I/O). Both
    are soft: when the preferred nodes are full Ray uses any node with room. PPO/GRPO roles follow it
    when ``ppo.colocate=false``."""
    storage_path: Optional[str] = None
    """Where committed checkpoints outlive the node that wrote them: ``<storage_path>/<run_name>/checkpoints``.
    A path every node mounts (NFS, EFS, CephFS, Lustre, a FUSE-mounted bucket): the ranks write there. Or an
    object-store URI through pyarrow's filesystems (``s3://bucket/prefix``, ``gs://``, ``abfs://``,
    ``hdfs://``, ``file://``; training kinds only): the ranks write to a local mirror
    (``<output_dir>/checkpoints`` on their node), one rank per node uploads, rank 0 writes the commit marker
    last; resume and recovery download from it. Either way ``output_dir`` may be a node's local disk.
    null = ``<output_dir>/checkpoints`` (then output_dir itself must be shared on multi-node clusters)."""
    dashboard: bool = False
    """Start Ray's dashboard (127.0.0.1, token auth) with the in-process local Ray (address=null). Off by
    default: its processes cost a local job several seconds of start-up and nothing in a job needs it;
    ``ray start`` clusters have their own."""
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment variables for workers (secret values are never logged)."""

    def __post_init__(self) -> None:
        require(self.num_workers >= 1, "cluster.num_workers", "must be >= 1", "set cluster.num_workers=1 or more")
        require(self.cpus_per_worker >= 1, "cluster.cpus_per_worker", "must be >= 1", "set it to 1 or more")
        require(self.placement in PLACEMENTS, "cluster.placement", f"unknown placement {self.placement!r}",
                f"use one of {', '.join(PLACEMENTS)}")
        if self.storage_path is not None and "://" in self.storage_path:
            scheme = self.storage_path.split("://", 1)[0]
            require(scheme in STORAGE_SCHEMES, "cluster.storage_path", f"{self.storage_path!r}: pyarrow has no filesystem "
                    f"for the scheme {scheme!r}", f"use one of {', '.join(s + '://' for s in STORAGE_SCHEMES)} or a path "
                    "every node mounts")
        require(self.num_cpus is None or self.num_cpus >= 1, "cluster.num_cpus", "must be >= 1 or null",
                "set cluster.num_cpus=null to use every core")

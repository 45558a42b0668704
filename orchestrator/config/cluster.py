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
    are soft: when the preferred nodes are full Ray uses any node with room. With
    ``parallel.tensor_parallel`` or ``pipeline_parallel`` > 1 the unit placed is a model-parallel group (one
    placement-group bundle holding all its ranks), so each TP/PP group is always inside one node (its
    collectives run every layer or micro-batch and must not cross the network). PPO/GRPO roles follow it
    when ``ppo.colocate=false``."""
    min_workers: Optional[int] = None
    """Elastic data parallelism (training kinds, opt-in): the fewest ranks a worker group may restart with
    after a failure (``trainer.max_failures``) when the cluster cannot hold ``num_workers`` any more (a node
    lost and not replaced within ``elastic_wait_s``). The group then restarts with the largest world size
    that fits, a multiple of tp*pp between ``min_workers`` and ``num_workers`` that splits the global batch,
    keeping ``trainer.global_batch_size`` (more gradient accumulation per rank) and the data order, from
    the newest committed checkpoint. ZeRO-0 only: ZeRO-1/2/3 checkpoints hold per-rank optimizer shards that
    load only at the world size that wrote them. null = ``num_workers`` (no shrink: a restart waits for the
    full group)."""
    elastic_wait_s: float = 30.0
    """With ``min_workers`` < ``num_workers``: how long a restart waits for the full group before it
    shrinks. Short by default: a lost node is rarely replaced within seconds, and every second waited is
    lost training time; raise it where an autoscaler replaces nodes quickly."""
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
        require(self.min_workers is None or 1 <= self.min_workers <= self.num_workers, "cluster.min_workers",
                f"{self.min_workers} is not between 1 and cluster.num_workers={self.num_workers}",
                f"set cluster.min_workers to 1..{self.num_workers}, or null for no elastic shrink")
        require(self.elastic_wait_s >= 0, "cluster.elastic_wait_s", f"{self.elastic_wait_s} is negative",
                "set it to the seconds a restart waits for the full group, e.g. 30")
        require(self.placement in PLACEMENTS, "cluster.placement", f"unknown placement {self.placement!r}",
                f"use one of {', '.join(PLACEMENTS)}")
        if self.storage_path is not None and "://" in self.storage_path:
            scheme = self.storage_path.split("://", 1)[0]
            require(scheme in STORAGE_SCHEMES, "cluster.storage_path", f"{self.storage_path!r}: pyarrow has no filesystem "
                    f"for the scheme {scheme!r}", f"use one of {', '.join(s + '://' for s in STORAGE_SCHEMES)} or a path "
                    "every node mounts")
        require(self.num_cpus is None or self.num_cpus >= 1, "cluster.num_cpus", "must be >= 1 or null",
                "set cluster.num_cpus=null to use every core")

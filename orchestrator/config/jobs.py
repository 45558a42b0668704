"""The fields every job kind shares; each kind's primary config (the schema behind ``conf/<kind>.yaml``)
extends one of these in its own module, ``orchestrator/kinds/<kind>.py``."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from orchestrator.config.base import Frozen
from orchestrator.config.cluster import ClusterConfig
from orchestrator.config.data import TrainDataConfig
from orchestrator.config.errors import require
from orchestrator.config.model import ModelConfig
from orchestrator.config.parallel import ParallelConfig
from orchestrator.config.tracking import TrackingConfig
from orchestrator.config.trainer import OptimConfig, TrainerConfig


@dataclass
class JobConfig(Frozen):
    """Fields every job kind has."""

    kind: str = ""
    """Job kind; fixed by the primary config (do not override)."""
    run_name: str = "${kind}"
    """Run name: the output sub-directory and the MLflow run name. Rerunning the same name resumes."""
    workspace: str = "outputs"
    """Root directory of all runs, the local MLflow store and its artifacts."""
    output_dir: str = "${workspace}/${run_name}"
    """This run's directory: checkpoints, exports, logs, completion markers."""
    resume: str = "auto"
    """``auto`` continues from the newest committed checkpoint of this run, ``never`` starts over
    (refusing to overwrite existing checkpoints), or a checkpoint directory path."""
    dry_run: bool = False
    """Print the resolved config and the plan, then exit without starting Ray."""
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    """Where the workers run."""
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    """MLflow tracking."""

    def __post_init__(self) -> None:
        require(bool(self.run_name) and "/" not in self.run_name, "run_name", f"invalid name {self.run_name!r}",
                "use a non-empty name without '/'")


@dataclass
class TrainJobConfig(JobConfig):
    """Fields of every job that trains a model with DeepSpeed."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """The causal LM."""
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    """ZeRO / TP / PP layout."""
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    """Training loop."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimizer and LR schedule."""
    data: TrainDataConfig = field(default_factory=TrainDataConfig)
    """Packed dataset from data_prep."""


def checkpoint_root(cfg: JobConfig) -> Path:
    """The directory the ranks write checkpoints into: ``<cluster.storage_path>/<run_name>/checkpoints``
    when the storage path is a filesystem path (every node mounts it; the output directory may then be
    node-local), else ``<output_dir>/checkpoints``. Every rank writes its shards there, the commit marker
    last; resume (a new job, or the worker group's restart after a node loss) reads from there. With a URI
    storage path this is the local mirror of this process's node (under ``$ORCHESTRATOR_LOCAL_DIR`` when
    set, else ``<output_dir>/checkpoints``) and :func:`checkpoint_uri` the durable copy."""
    if cfg.cluster.storage_path and "://" not in cfg.cluster.storage_path:
        return Path(cfg.cluster.storage_path) / cfg.run_name / "checkpoints"
    uri = checkpoint_uri(cfg)
    if uri and os.environ.get(LOCAL_DIR_ENV):  # the node's own disk, named by the store's URI (unique per run)
        digest = hashlib.sha256(uri.encode()).hexdigest()[:10]
        return Path(os.environ[LOCAL_DIR_ENV]) / "checkpoints" / f"{cfg.run_name}-{digest}"
    return Path(cfg.output_dir) / "checkpoints"


LOCAL_DIR_ENV = "ORCHESTRATOR_LOCAL_DIR"
"""A node's own scratch directory (set by ``cluster/local/start.sh`` / ``join.sh`` for every Ray worker of
the node): the local checkpoint mirror of URI storage goes there when it is set."""


def checkpoint_uri(cfg: JobConfig) -> Optional[str]:
    """``<cluster.storage_path>/<run_name>/checkpoints`` when the storage path is an object-store URI
    (:mod:`orchestrator.engine.storage`), else None."""
    sp = cfg.cluster.storage_path
    if sp and "://" in sp:
        return f"{sp.rstrip('/')}/{cfg.run_name}/checkpoints"
    return None

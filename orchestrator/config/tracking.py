"""``tracking`` group: the MLflow store every run logs to."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from orchestrator.config.base import Frozen
from orchestrator.config.errors import require


@dataclass
class TrackingConfig(Frozen):
    uri: Optional[str] = None
    """MLflow tracking URI: null = a local sqlite store ``<workspace>/mlflow.db`` (embedded default);
    or ``http://host:5000`` (a tracking server, artifacts proxied), or a database URI."""
    experiment: str = "orchestrator"
    """MLflow experiment name that runs are filed under."""
    enabled: bool = True
    """Set false to train without any tracking (e.g. quick debugging)."""
    log_system_metrics: bool = True
    """Log CPU/GPU/memory system metrics alongside training metrics."""
    parent_run_id: Optional[str] = None
    """Nest this job's run under an existing MLflow run (set by the pipeline)."""
    register_models: bool = True
    """Register each job's exported model in the MLflow Model Registry."""
    tags: dict[str, str] = field(default_factory=dict)
    """Extra MLflow tags for the run."""

    def __post_init__(self) -> None:
        require(bool(self.experiment), "tracking.experiment", "must not be empty", "name the MLflow experiment")

"""MLflow tracking: run lifecycle (:func:`job_run`), idempotent metric logging, lineage."""

from orchestrator.tracking.metrics import MetricsLogger
from orchestrator.tracking.run import NullTracker, job_run, lineage_tags
from orchestrator.tracking.tracker import JobTracker, config_hash

__all__ = ["JobTracker", "MetricsLogger", "NullTracker", "config_hash", "job_run", "lineage_tags"]

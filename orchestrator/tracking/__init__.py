"""MLflow tracking: run lifecycle, idempotent metric logging, lineage."""

from orchestrator.tracking.metrics import MetricsLogger
from orchestrator.tracking.tracker import JobTracker, config_hash

__all__ = ["JobTracker", "MetricsLogger", "config_hash"]

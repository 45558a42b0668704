"""The one way a job opens and closes its MLflow run (or runs untracked with ``tracking.enabled=false``)."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping, Optional


class NullTracker:
    """Stands in for :class:`~orchestrator.tracking.tracker.JobTracker` when tracking is disabled."""

    run_id: Optional[str] = None
    experiment_id: Optional[str] = None
    client = None

    def __getattr__(self, name: str) -> Any:
        """Every logging call (``log_metrics``, ``set_tags``, ``register_model``, ...) does nothing."""
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *args, **kwargs: None


@contextlib.contextmanager
def job_run(cfg: Any, extra_tags: Optional[Mapping[str, str]] = None,
            resume_run_id: Optional[str] = None) -> Iterator[Any]:
    """The job's MLflow run, created or reopened (see ``JobTracker.start``; ``resume_run_id``: the run of
    the checkpoint being resumed, used when ``output_dir`` lost its record) and ended FINISHED, FAILED or
    KILLED by the context; a :class:`NullTracker` when ``cfg.tracking.enabled`` is false."""
    if not cfg.tracking.enabled:
        yield NullTracker()
        return
    from orchestrator.tracking.tracker import JobTracker

    with JobTracker.start(cfg, extra_tags=extra_tags, resume_run_id=resume_run_id) as tracker:
        yield tracker


def lineage_tags(**upstream: Optional[str]) -> dict[str, str]:
    """MLflow tags naming each upstream model/dataset a job consumed (``upstream.<name>``)."""
    return {f"upstream.{k}": str(v) for k, v in upstream.items() if v is not None}

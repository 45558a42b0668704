"""Wall-clock seconds of a job's named phases: the ``startup.*`` breakdown every job records."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Iterator


STARTUP_FILE = "startup.json"
"""``<output_dir>/startup.json``: a job's ``startup.*`` breakdown (the same numbers as its MLflow metrics)."""


class Phases:
    """Accumulates the wall seconds of named phases, in the order they first ran."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - t0)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def metrics(self, prefix: str = "startup.") -> dict[str, float]:
        """``{"startup.<phase>_s": seconds}``."""
        return {f"{prefix}{k}_s": round(v, 3) for k, v in self.seconds.items()}


def one_line(seconds: dict[str, float], limit: int = 8) -> str:
    """``ray_start 3.1s, worker_group 12.0s, ...``: the largest phases, in their order."""
    top = sorted(seconds, key=seconds.get, reverse=True)[:limit]
    return ", ".join(f"{k} {seconds[k]:.1f}s" for k in seconds if k in top)


AFTER_START = ("train_loop", "checkpoint", "recovery", "final_eval", "export", "register", "fit_teardown", "teardown")
"""Phases after a training job's first step: not in ``to_first_step`` (a data job passes its own)."""


def startup_metrics(seconds: dict[str, float], after: tuple[str, ...] = AFTER_START) -> dict[str, float]:
    """``startup.<phase>_s`` for every phase, and ``startup.to_first_step_s``: the phases not in ``after``
    (everything from the command to the end of the first step, for a training job)."""
    phases = Phases()
    phases.seconds = dict(seconds)
    return {**phases.metrics(), "startup.to_first_step_s": round(sum(v for k, v in seconds.items() if k not in after), 3)}


def record_startup(out_dir: str | Path, seconds: dict[str, float], after: tuple[str, ...] = AFTER_START) -> dict[str, float]:
    """:func:`startup_metrics`, also written (atomically) to ``<out_dir>/startup.json``; returns the metrics."""
    import json

    from orchestrator.core.files import atomic_write_text

    result = startup_metrics(seconds, after)
    atomic_write_text(Path(out_dir) / STARTUP_FILE, json.dumps(result, indent=1))
    return result


def startup_line(kind: str, metrics: dict[str, float], limit: int = 5) -> str:
    """``ppo: first step after 9.1s of start-up (ray_start 1.2s, roles_start 5.0s, ...)``: the largest start-up
    phases of :func:`startup_metrics`' result."""
    before = {k[len("startup."):-2]: v for k, v in metrics.items()
              if k != "startup.to_first_step_s" and k[len("startup."):-2] not in AFTER_START}
    return (f"{kind}: first step after {metrics.get('startup.to_first_step_s', 0.0):.1f}s of start-up "
            f"({one_line(before, limit)})")

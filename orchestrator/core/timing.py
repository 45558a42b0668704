"""Wall-clock seconds of a job's named phases: the ``startup.*`` breakdown every job records."""

from __future__ import annotations

import contextlib
import time
from typing import Iterator


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

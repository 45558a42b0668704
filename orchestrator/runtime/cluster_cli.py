"""Cluster-side verbs of the CLI (submit/status/logs/stop/resume/list/runs) over the Ray Jobs API."""

from __future__ import annotations

import sys
from typing import Sequence


def main(verb: str, args: Sequence[str]) -> int:
    print(f"error: `orchestrator {verb}` is not available in this build yet; use `orchestrator run`",
          file=sys.stderr)
    return 2

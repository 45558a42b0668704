"""Shared fixtures. Environment set here applies to every test process and its children."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.integration.cluster_helpers import finished_pretrain, local_cluster  # noqa: F401  (session fixtures)
from tests.integration.multinode_helpers import two_node_cluster  # noqa: F401  (session fixture)

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """An empty workspace directory (runs, MLflow store) for one test."""
    ws = tmp_path / "ws"
    ws.mkdir()
    return ws


def orchestrator_cmd() -> list[str]:
    """The installed CLI, run with this interpreter."""
    return [sys.executable, "-m", "orchestrator.cli"]

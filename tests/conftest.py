"""Shared fixtures. Environment set here applies to every test process and its children."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.integration import cluster_helpers
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


# Session clusters that stop right after their last test instead of at the end of the session
# (tests/integration/cluster_helpers.py: EARLY_STOP), and whose tests run next to each other.
EARLY_STOPPED = ("local_cluster",)


def _uses(item: pytest.Item, fixture: str) -> bool:
    return fixture in getattr(item, "fixturenames", ())


SESSION_CLUSTERS = ("two_node_cluster", "local_cluster")
"""Session fixtures that start whole clusters: under pytest-xdist (``make test`` runs the suite on 2 workers)
all the tests using one run on one worker, which starts that cluster once."""

FIRST = ("two_node_cluster", "tests/e2e/test_pipeline_e2e.py", "local_cluster")
"""Units of work handed out first under pytest-xdist, longest first (the two-node file takes ~7 min): a long
unit handed out last would leave the other worker idle at the end."""


def _group(item: pytest.Item) -> str:
    """The pytest-xdist unit of ``item``: its session cluster's name, else its file (module fixtures, e.g. a
    trained policy, are then built on one worker only)."""
    return next((f for f in SESSION_CLUSTERS if _uses(item, f)), item.nodeid.split("::", 1)[0])


def _xdist_groups(config: pytest.Config) -> bool:
    """Under ``--dist loadgroup``: pytest-xdist's workers (which collect) see it as ``option.loadgroup``."""
    return bool(getattr(config.option, "loadgroup", False)) or getattr(config.option, "dist", "no") == "loadgroup"


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's worker hook reads the xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The tests of an early-stopped cluster run together, where the last of them was (test_mlflow_ui_browser's
    move next to test_cluster's), so the cluster idles through no other file; otherwise the order is kept.
    Under pytest-xdist (``--dist loadgroup``) each test also gets its unit (:func:`_group`), and the units of
    :data:`FIRST` go first."""
    if _xdist_groups(config):
        for item in items:
            item.add_marker(pytest.mark.xdist_group(_group(item)))
        rank = {g: i for i, g in enumerate(FIRST)}
        items.sort(key=lambda it: rank.get(_group(it), len(FIRST)))  # stable: each unit keeps its order
    for fixture in EARLY_STOPPED:
        users = [it for it in items if _uses(it, fixture)]
        if len(users) < 2:
            continue
        last = max(i for i, it in enumerate(items) if _uses(it, fixture))
        rest = [it for it in items if not _uses(it, fixture)]
        k = sum(1 for it in items[:last] if not _uses(it, fixture))
        items[:] = rest[:k] + users + rest[k:]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None):
    """After the last selected test that uses an early-stopped cluster (and its module's fixtures): stop it."""
    yield
    for fixture in EARLY_STOPPED:
        stop = cluster_helpers.EARLY_STOP.get(fixture)
        if stop is None or not _uses(item, fixture):
            continue
        later = item.session.items[item.session.items.index(item) + 1:]
        if not any(_uses(it, fixture) for it in later):
            cluster_helpers.EARLY_STOP.pop(fixture, None)
            stop()

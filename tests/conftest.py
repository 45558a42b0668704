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
EARLY_STOPPED = ("local_cluster", "two_node_cluster")


def _uses(item: pytest.Item, fixture: str) -> bool:
    return fixture in getattr(item, "fixturenames", ())


UNITS = {
    # the session cluster `local_cluster`
    "tests/integration/test_cluster.py": "local_cluster", "tests/e2e/test_mlflow_ui_browser.py": "local_cluster",
    # the SFT policy trained once per session under <basetemp>/rlhf_shared (tests/integration/rlhf_helpers.py)
    **{f"tests/integration/test_{name}.py": "rlhf_shared" for name in ("sft", "reward_model", "dpo", "ppo", "grpo")},
    # the tiny_h32 SFT policy under <basetemp>/rlhf_shared_h32
    "tests/integration/test_rollout_vllm.py": "rlhf_h32", "tests/integration/test_rollout_vllm_separate.py": "rlhf_h32",
}
"""Files whose tests share a unit of work under pytest-xdist (``make test`` runs the suite on 2 workers) because
they share something a session builds once: a session cluster, or a trained policy cached in the worker's own
base temp dir. One worker then builds it once. Every other file is its own unit (its module fixtures are built
on one worker only); ``test_multinode.py`` is the only user of ``two_node_cluster``."""

FIRST = ("tests/integration/test_multinode.py", "tests/e2e/test_pipeline_e2e.py", "local_cluster", "rlhf_shared",
         "rlhf_h32")
"""Units handed out first, longest first (the two-node file takes ~7 min): a long unit handed out last would
leave the other worker idle at the end."""


def _unit(nodeid: str) -> str:
    path = nodeid.split("::", 1)[0]
    return UNITS.get(path, path)


try:
    from xdist.scheduler import LoadScopeScheduling
except ImportError:  # pragma: no cover - pytest-xdist is a dev dependency; without it the suite runs serially
    pass
else:
    class _UnitScheduling(LoadScopeScheduling):
        """``--dist loadfile`` with :data:`UNITS` (pytest-xdist's ``loadgroup`` marks have no effect under
        pytest 9, whose nodes no longer keep the ``_nodeid`` xdist rewrites)."""

        def __init__(self, config: pytest.Config, log=None) -> None:
            super().__init__(config, log)
            config.option.loadscopereorder = False  # units in collection order (FIRST first), not by test count

        def _split_scope(self, nodeid: str) -> str:
            return _unit(nodeid)

    def pytest_xdist_make_scheduler(config: pytest.Config, log):
        if config.getoption("dist") in ("load", "loadfile", "loadscope", "loadgroup"):
            return _UnitScheduling(config, log)
        return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The tests of an early-stopped cluster run together, where the last of them was (test_mlflow_ui_browser's
    move next to test_cluster's), so the cluster idles through no other file; otherwise the order is kept.
    On a pytest-xdist worker (whose collection order is the order units are handed out) the units of
    :data:`FIRST` go first."""
    if hasattr(config, "workerinput"):
        rank = {u: i for i, u in enumerate(FIRST)}
        items.sort(key=lambda it: rank.get(_unit(it.nodeid), len(FIRST)))  # stable: each unit keeps its order
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

"""The private local Ray's environment hand-off (no Ray started: the helpers are tested directly)."""

from __future__ import annotations

import os

from orchestrator.config.cluster import ClusterConfig
from orchestrator.runtime import ray_runtime
from orchestrator.runtime.ray_runtime import _worker_env_for_local_processes, worker_env


def test_worker_env_is_set_while_ray_starts_and_the_drivers_own_values_come_back(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "8")  # the user's setting for the driver
    monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)
    env = worker_env(ClusterConfig(num_workers=2, cpus_per_worker=1))
    assert env["OMP_NUM_THREADS"] == "1" and env["TOKENIZERS_PARALLELISM"] == "false"
    with _worker_env_for_local_processes(env):
        # what the GCS/raylet processes spawned here inherit, and pass on to every worker
        assert {k: os.environ.get(k) for k in env} == env
    assert os.environ["OMP_NUM_THREADS"] == "8"  # the driver's own value is back
    assert os.environ["TOKENIZERS_PARALLELISM"] == "false"  # unset before: stays (the driver builds data too)


def test_service_process_hooks_are_restored():
    from ray._private import node as ray_node

    originals = (ray_node.Node.start_api_server, ray_node.Node.start_monitor)
    with ray_runtime._without_service_processes():
        assert ray_node.Node.start_api_server is not originals[0]
        assert ray_node.Node.start_monitor is not originals[1]
    assert (ray_node.Node.start_api_server, ray_node.Node.start_monitor) == originals

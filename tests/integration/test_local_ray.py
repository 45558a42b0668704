"""The private in-process Ray a job starts: what its workers inherit and which services it runs."""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.slow


def test_workers_inherit_the_worker_env_and_no_api_server_or_monitor_runs(ray_local):
    import psutil
    import ray

    from orchestrator.config.cluster import ClusterConfig
    from orchestrator.runtime.ray_runtime import worker_env

    expected = worker_env(ClusterConfig(num_workers=2, num_cpus=2))  # what ray_local was started with

    @ray.remote(num_cpus=0)
    def env_of_a_worker(keys: list[str]) -> dict[str, str | None]:
        return {k: os.environ.get(k) for k in keys}

    # no job runtime_env: the values reach the (prestarted) worker processes through the raylet
    assert ray.get(env_of_a_worker.remote(sorted(expected))) == expected

    @ray.remote(num_cpus=0)
    def preloaded() -> bool:
        import sys

        return "orchestrator.runtime.worker_preload" in sys.modules

    assert ray.get(preloaded.remote()) is False  # started without a preload list
    session_dir = ray._private.worker.global_worker.node.get_session_dir_path()
    assert os.path.isdir(session_dir)
    dashboards = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if ("dashboard/dashboard.py" in cmd or "autoscaler/_private/monitor.py" in cmd) and session_dir in cmd:
            dashboards.append(cmd)
    assert dashboards == []  # neither the API server nor the autoscaler monitor runs for a private Ray
    assert ray._private.worker.global_worker.node.webui_url is None
    # and the session still serves actors and Ray Data (data_prep's shuffle runs on it)
    import ray.data

    assert sorted(r["id"] for r in ray.data.range(6).map(lambda r: {"id": r["id"] * 2}).take_all()) == [0, 2, 4, 6, 8, 10]


PRELOAD_PROBE = r"""
import json, os, sys
os.environ.setdefault("RAY_AUTH_MODE", "token")
import ray
from orchestrator.config.cluster import ClusterConfig
from orchestrator.runtime.ray_runtime import ray_session

@ray.remote(num_cpus=0)
def modules():
    return {"preloaded": "orchestrator.runtime.worker_preload" in sys.modules, "colorsys": "colorsys" in sys.modules}

with ray_session(ClusterConfig(num_workers=1, num_cpus=1), preload=tuple(sys.argv[1:])):
    print(json.dumps(ray.get(modules.remote())))
"""


def test_a_jobs_private_ray_imports_its_preload_in_new_workers_before_they_take_work(tmp_path):
    """A fresh private Ray (its own process: the session's Ray is already up) started with a preload list:
    its worker processes import the listed modules before running anything (the session's Ray, started
    without a list, does not: see the first test's workers)."""
    import json
    import subprocess
    import sys

    script = tmp_path / "probe.py"
    script.write_text(PRELOAD_PROBE)
    env = {**os.environ, "ORCHESTRATOR_EARLY_PRELOAD": "1"}
    out = subprocess.run([sys.executable, str(script), "colorsys"], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"preloaded": True, "colorsys": True}

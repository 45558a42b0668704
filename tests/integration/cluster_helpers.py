"""A real single-machine cluster for tests: ``cluster/local/start.sh`` with private ports and temp dir.

Session fixtures (registered in ``tests/conftest.py``):
* ``local_cluster``: Ray head (token auth, ``--num-cpus 2``) + MLflow server on 127.0.0.1, stopped after;
* ``finished_pretrain``: a tiny pretrain submitted with ``orchestrator submit`` and followed to completion.
Free ports and a temp dir of its own keep it apart from any other Ray running on the machine.
"""

from __future__ import annotations

import os
import random
import re
import secrets
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

TINY_PRETRAIN = ["trainer.global_batch_size=8", "trainer.eval_batches=2", "optim.warmup_steps=2",
                 "trainer.save_every=2", "cluster=local_head"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_range(width: int = 60) -> int:
    """First port of ``width`` consecutive free ports (Ray's worker ports)."""
    for _ in range(50):
        base = random.randrange(20000, 30000)
        try:
            socks = []
            for p in range(base, base + width):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range")


@dataclass
class LocalCluster:
    dir: Path
    address: str
    mlflow_uri: str
    token: str
    workspace: Path
    env: dict[str, str] = field(default_factory=dict)

    def cli(self, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        """``orchestrator <args>`` as a user runs it, with the cluster's token in the environment."""
        return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], cwd=REPO, env=env or self.env,
                              capture_output=True, text=True, timeout=timeout)

    def submit_args(self, run_name: str, *extra: str) -> list[str]:
        return ["submit", "pretrain", "--address", self.address, "tracking=server", f"tracking.uri={self.mlflow_uri}",
                f"workspace={self.workspace}", f"run_name={run_name}", *TINY_PRETRAIN, *extra]

    def job_status(self, job_id: str) -> tuple[str, str]:
        """(status, the end of its logs) of a Ray job, straight from the Jobs REST API with the cluster's token
        (no CLI process: tests poll it while a job runs)."""
        import requests

        auth = {"Authorization": f"Bearer {self.token}"}
        info = requests.get(f"{self.address}/api/jobs/{job_id}", headers=auth, timeout=30)
        info.raise_for_status()
        logs = requests.get(f"{self.address}/api/jobs/{job_id}/logs", headers=auth, timeout=30)
        return info.json()["status"], (logs.json().get("logs", "") if logs.ok else logs.text)[-4000:]

    def mlflow_get(self, path: str, **params) -> dict:
        """GET the MLflow REST API of the cluster's server."""
        import requests

        r = requests.get(f"{self.mlflow_uri}/api/2.0/mlflow/{path}", params=params, timeout=30)
        r.raise_for_status()
        return r.json()


def field_of(output: str, name: str) -> str:
    """Value of a ``name: value`` line printed by the CLI."""
    m = re.search(rf"^{name}: (\S+)", output, re.M)
    assert m, f"no '{name}:' line in:\n{output}"
    return m.group(1)


def node_ports_flags() -> str:
    """``ray start`` flags pinning every per-node port to a free one (no clash with other Rays here)."""
    worker_base = _port_range()
    ports = {name: _free_port() for name in ("agent", "agent_grpc", "rt_agent", "metrics", "nm", "om")}
    return (f"--num-gpus 0 --object-store-memory 300000000 --dashboard-agent-listen-port {ports['agent']} "
            f"--dashboard-agent-grpc-port {ports['agent_grpc']} --runtime-env-agent-port {ports['rt_agent']} "
            f"--metrics-export-port {ports['metrics']} --node-manager-port {ports['nm']} "
            f"--object-manager-port {ports['om']} --min-worker-port {worker_base} --max-worker-port {worker_base + 59}")


def base_env() -> dict[str, str]:
    """This environment without Ray/MLflow settings, with the venv's scripts first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_", "ORCHESTRATOR_LOCAL"))}
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    return env


def start_head(cdir: Path, token: str, **extra_env: str) -> tuple[dict[str, str], subprocess.CompletedProcess, dict]:
    """``cluster/local/start.sh`` with private ports and temp dir: (its env, the result, the ports)."""
    ports = {"dash": _free_port(), "mlflow": _free_port(), "gcs": _free_port(), "client": _free_port()}
    env = dict(base_env(), RAY_AUTH_TOKEN=token, CLUSTER_DIR=str(cdir), RAY_TEMP_DIR=f"/tmp/rt_{secrets.token_hex(3)}",
               RAY_PORT=str(ports["gcs"]), DASHBOARD_PORT=str(ports["dash"]), RAY_CLIENT_PORT=str(ports["client"]),
               MLFLOW_PORT=str(ports["mlflow"]), NUM_CPUS="2", RAY_START_EXTRA=node_ports_flags(), **extra_env)
    start = subprocess.run(["bash", str(REPO / "cluster/local/start.sh")], env=env, capture_output=True, text=True,
                           timeout=400)
    return env, start, ports


def stop_node(env: dict[str, str]) -> None:
    """``cluster/local/stop.sh`` for the node (or head + MLflow) of ``env``, then its temp dir removed."""
    subprocess.run(["bash", str(REPO / "cluster/local/stop.sh")], env=env, capture_output=True, timeout=120)
    subprocess.run(["rm", "-rf", env["RAY_TEMP_DIR"]], check=False)


EARLY_STOP: dict[str, Callable[[], None]] = {}
"""Stop functions of running session clusters, by fixture name: ``tests/conftest.py`` calls one right after the
last test of the session that uses the fixture (an idle Ray head + MLflow server costs ~5 % of a core; the
session's other tests would otherwise share the 2 cores with it until the end). Stopping twice is harmless."""


@pytest.fixture(scope="session")
def local_cluster(tmp_path_factory):
    cdir = Path(tmp_path_factory.mktemp("cluster"))
    token = secrets.token_hex(32)
    env, start, ports = start_head(cdir, token)
    EARLY_STOP["local_cluster"] = lambda: stop_node(env)
    try:
        assert start.returncode == 0, start.stdout + start.stderr + _tail(cdir / "ray.log") + _tail(cdir / "mlflow.log")
        cli_env = dict(base_env(), RAY_AUTH_TOKEN=token)
        yield LocalCluster(dir=cdir, address=f"http://127.0.0.1:{ports['dash']}",
                           mlflow_uri=f"http://127.0.0.1:{ports['mlflow']}", token=token, workspace=cdir / "ws",
                           env=cli_env)
    finally:
        EARLY_STOP.pop("local_cluster", None)
        stop_node(env)


def _tail(path: Path, n: int = 3000) -> str:
    return path.read_text()[-n:] if path.exists() else ""


@dataclass
class FinishedJob:
    job_id: str
    run_id: str
    submit_out: str
    logs_out: str
    logs_rc: int


@pytest.fixture(scope="session")
def finished_pretrain(local_cluster) -> FinishedJob:
    """A 6-step pretrain submitted through the Jobs API and followed (``logs --follow``) to its end."""
    sub = local_cluster.cli(*local_cluster.submit_args("submitted", "trainer.max_steps=6"))
    assert sub.returncode == 0, sub.stdout + sub.stderr
    job_id, run_id = field_of(sub.stdout, "job"), field_of(sub.stdout, "mlflow_run_id")
    logs = local_cluster.cli("logs", job_id, "--follow", "--address", local_cluster.address, timeout=400)
    return FinishedJob(job_id, run_id, sub.stdout, logs.stdout + logs.stderr, logs.returncode)

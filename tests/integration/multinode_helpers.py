"""A real two-node Ray cluster on one machine, the way a second host joins one.

Session fixture ``two_node_cluster`` (registered in ``tests/conftest.py``):
* head: ``MULTI_NODE=1 cluster/local/start.sh`` (``ray start --head``, token auth, 2 CPUs, label
  ``node_group=head``, node death detected in ~3 s: :data:`HEALTH_CHECK`) and an MLflow server, with private
  ports and its own Ray temp dir;
* worker: ``cluster/local/join.sh`` (``ray start --address <head GCS>``, 2 CPUs, label ``node_group=worker``)
  with its own temp dir, ports and node directory, joining while MLflow starts.
Each node has its own scratch directory (``ORCHESTRATOR_LOCAL_DIR`` in its workers' environment). Jobs run
as a user runs them: ``orchestrator run ... cluster.address=<head GCS>`` in a subprocess (this pytest
process keeps its own in-process Ray for the other integration tests). Torn down after: ``stop.sh`` for
both nodes, then their temp dirs removed.

An S3 object store for ``cluster.storage_path=s3://...``: moto's S3 server (``ThreadedMotoServer``, a real
HTTP endpoint speaking the S3 REST API) on 127.0.0.1, started before the nodes. Every node and the driver get
what a host on a real cluster has in its environment: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (random
for this session), ``AWS_DEFAULT_REGION`` and ``AWS_ENDPOINT_URL_S3`` (the endpoint; pyarrow's S3 filesystem
reads it like the AWS SDKs do), so the URI itself carries no endpoint and no credentials.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.cluster_helpers import (EARLY_STOP, REPO, _free_port, _tail, base_env, node_ports_flags,
                                              stop_node)

BUCKET = "orchestrator-test"


@dataclass
class S3Store:
    """The session's S3 server: its environment for nodes and drivers, and a pyarrow view of the bucket."""

    env: dict[str, str]

    def filesystem(self):
        from pyarrow import fs

        return fs.S3FileSystem(access_key=self.env["AWS_ACCESS_KEY_ID"], secret_key=self.env["AWS_SECRET_ACCESS_KEY"],
                               region=self.env["AWS_DEFAULT_REGION"], endpoint_override=self.env["AWS_ENDPOINT_URL_S3"])

    def uri(self, prefix: str) -> str:
        return f"s3://{BUCKET}/{prefix}"

    def files(self, prefix: str) -> dict[str, "object"]:
        """``relative path -> pyarrow FileInfo`` of every object under ``<bucket>/<prefix>``."""
        from pyarrow.fs import FileSelector, FileType

        base = f"{BUCKET}/{prefix}".rstrip("/")
        infos = self.filesystem().get_file_info(FileSelector(base, recursive=True, allow_not_found=True))
        return {i.path[len(base) + 1:]: i for i in infos if i.type == FileType.File}

    def names(self, prefix: str) -> list[str]:
        """Names directly under ``<bucket>/<prefix>`` (files and "directories")."""
        from pyarrow.fs import FileSelector

        infos = self.filesystem().get_file_info(FileSelector(f"{BUCKET}/{prefix}", allow_not_found=True))
        return sorted(i.base_name for i in infos)

    def read_text(self, key: str) -> str:
        with self.filesystem().open_input_stream(f"{BUCKET}/{key}") as f:
            return f.read().decode()


def start_s3_store() -> tuple[S3Store, object]:
    """moto's S3 server on a free loopback port with one bucket: (the store, the server to ``stop()``)."""
    import logging

    from moto.server import ThreadedMotoServer
    from pyarrow import fs

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request in the test output
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ACCESS_KEY_ID": secrets.token_hex(8), "AWS_SECRET_ACCESS_KEY": secrets.token_hex(16),
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}",
           "AWS_EC2_METADATA_DISABLED": "true"}
    s3 = fs.S3FileSystem(access_key=env["AWS_ACCESS_KEY_ID"], secret_key=env["AWS_SECRET_ACCESS_KEY"],
                         region="us-east-1", endpoint_override=env["AWS_ENDPOINT_URL_S3"], allow_bucket_creation=True)
    s3.create_dir(BUCKET)
    return S3Store(env), server


@dataclass
class TwoNodeCluster:
    head_dir: Path
    worker_dir: Path
    gcs: str
    """The head's GCS address (``cluster.address`` of jobs run against this cluster)."""
    mlflow_uri: str
    env: dict[str, str]
    """Environment of a driver on this machine: the token, ``RAY_API_SERVER_ADDRESS``, this repository."""
    worker_env: dict[str, str]
    """Environment ``join.sh`` ran with (to rejoin the worker node after it was killed)."""
    s3: S3Store
    """The S3 server every node reaches (``cluster.storage_path=s3://...``)."""

    def run(self, *overrides: str, kind: str = "pretrain") -> subprocess.Popen:
        """``orchestrator run <kind> <overrides>`` against this cluster (a driver on the head's machine, as
        a user runs it there), started in the background; training kinds get 2 ranks."""
        ranks = ["cluster.num_workers=2"] if kind in ("pretrain", "sft", "dpo", "reward_model") else []
        cmd = [sys.executable, "-m", "orchestrator.cli", "run", kind, f"cluster.address={self.gcs}", *ranks,
               "tracking=server", f"tracking.uri={self.mlflow_uri}", *overrides]
        # output to a file, not a pipe: a test polling the job's files meanwhile must not block it on a full pipe
        log = tempfile.NamedTemporaryFile("w+", prefix=f"{kind}-", suffix=".log", delete=False)
        proc = subprocess.Popen(cmd, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT, text=True)
        proc.log_path = log.name  # type: ignore[attr-defined]
        log.close()
        return proc

    def node_ids(self) -> dict[str, str]:
        """``node_group`` label -> node id of the alive nodes."""
        return {n.get("labels", {}).get("node_group", ""): n["node_id"] for n in self.alive_nodes()}

    def wait_for_nodes(self, n: int = 2, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while len(self.alive_nodes()) < n and time.time() < deadline:
            time.sleep(0.5)

    def ensure_worker(self) -> None:
        """Both nodes alive: the worker node rejoins (``join.sh``, a new node id) if an earlier test killed it.
        Done lazily, by the test that needs two nodes, so the last node-loss test pays for no rejoin."""
        for attempt in (1, 2, 3):
            fresh = not self._worker_running()
            if fresh:
                self.kill_worker_node()  # whatever is left of an earlier node of this directory
                join = self.join_worker()
                assert join.returncode == 0, join.stdout + join.stderr + _tail(self.worker_dir / "ray.log")
            self.wait_for_nodes(2)
            if fresh and len(self.alive_nodes()) == 2:
                # seen under the 2-worker suite's load: a rejoined raylet registered, then exited (code 1) ~7 s
                # later; a node that is still there after a few seconds stays
                time.sleep(8)
            if len(self.alive_nodes()) == 2 and self._worker_running():
                return
            # seen on a loaded machine: join.sh returned but the node never registered, or it left again
            print(f"worker node not alive (attempt {attempt}); killing it and joining again:\n"
                  + _tail(self.worker_dir / "ray.log"))
            self.kill_worker_node()
        assert len(self.alive_nodes()) == 2, (self.alive_nodes(), _tail(self.worker_dir / "ray.log"))

    def _worker_running(self) -> bool:
        """The worker node's ``ray start --block`` process (it exits when the node's raylet dies) is running."""
        pid_file = self.worker_dir / "ray.pid"
        return pid_file.exists() and _running(int(pid_file.read_text()))

    def kill_worker_node(self) -> None:
        """A node crash: SIGKILL to the worker node's whole process session (raylet, agents, its workers)."""
        pid_file = self.worker_dir / "ray.pid"
        if not pid_file.exists():
            return
        pid = int(pid_file.read_text())
        out = subprocess.run(["ps", "-o", "pid=", "-s", str(pid)], capture_output=True, text=True).stdout.split()
        pids = [pid, *map(int, out)]
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.time() + 30  # dead once gone or a zombie (this machine's init may reap them late)
        while any(_running(p) for p in pids) and time.time() < deadline:
            time.sleep(0.2)
        pid_file.unlink(missing_ok=True)  # join.sh would take a zombie for a running node

    def join_worker(self) -> subprocess.CompletedProcess:
        """``join.sh`` again, as a replacement host joins: with ports of its own, not the lost node's. Rejoined
        raylets on the lost node's fixed ports exited (code 1) seconds after registering, three times in a row
        in one run under the 2-worker suite's load; the cause is not known (the head's cached connection to
        the old address, or a port still held), fresh ports avoid both."""
        self.worker_env["RAY_START_EXTRA"] = node_ports_flags()
        return subprocess.run(["bash", str(REPO / "cluster/local/join.sh")], env=self.worker_env, capture_output=True,
                              text=True, timeout=300)

    def alive_nodes(self) -> list[dict]:
        """Alive nodes as the head's GCS lists them: the state API behind ``ray list nodes --filter
        state=ALIVE``, asked over HTTP with the cluster's token (no CLI process per poll: a Python start with Ray
        imported costs ~2-3 s of CPU and ``wait_for_nodes`` polls)."""
        import requests

        params = {"filter_keys": "state", "filter_predicates": "=", "filter_values": "ALIVE", "limit": 100,
                  "detail": "false"}
        try:
            r = requests.get(f"{self.env['RAY_API_SERVER_ADDRESS']}/api/v0/nodes", params=params, timeout=60,
                             headers={"Authorization": f"Bearer {self.env['RAY_AUTH_TOKEN']}"})
            r.raise_for_status()
            return r.json()["data"]["result"]["result"]
        except (requests.RequestException, KeyError, ValueError):
            return []


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def finish(proc: subprocess.Popen, timeout: float = 400) -> tuple[int, str]:
    """Wait for a job of :meth:`TwoNodeCluster.run`; (exit code, its output)."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    path = Path(proc.log_path)  # type: ignore[attr-defined]
    out = path.read_text(errors="replace")
    path.unlink(missing_ok=True)
    return proc.returncode, out


HEALTH_CHECK = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3"}
"""The head's GCS declares a node dead after 3 failed health checks 1 s apart (Ray's default: 5, 3 s apart): a
killed node's raylet refuses the connection at once, so its loss is known in about 3 s instead of 15; a live
but busy raylet still has Ray's 10 s timeout per check."""


@pytest.fixture(scope="session")
def two_node_cluster(tmp_path_factory):
    root = Path(tmp_path_factory.mktemp("two_nodes"))
    token = secrets.token_hex(32)
    s3_store, s3_server = start_s3_store()
    ports = {"dash": _free_port(), "mlflow": _free_port(), "gcs": _free_port(), "client": _free_port()}
    gcs = f"127.0.0.1:{ports['gcs']}"
    head_env = dict(base_env(), RAY_AUTH_TOKEN=token, CLUSTER_DIR=str(root / "head"), MULTI_NODE="1",
                    RAY_TEMP_DIR=f"/tmp/rt_{secrets.token_hex(3)}", RAY_PORT=str(ports["gcs"]),
                    DASHBOARD_PORT=str(ports["dash"]), RAY_CLIENT_PORT=str(ports["client"]),
                    MLFLOW_PORT=str(ports["mlflow"]), NUM_CPUS="2", RAY_START_EXTRA=node_ports_flags(),
                    PYTHONPATH=str(REPO), **HEALTH_CHECK, **s3_store.env)
    worker_env = dict(base_env(), RAY_AUTH_TOKEN=token, HEAD=gcs, NODE_DIR=str(root / "worker"), NUM_CPUS="2",
                      LABELS="node_group=worker", RAY_TEMP_DIR=f"/tmp/rt_{secrets.token_hex(3)}",
                      RAY_START_EXTRA=node_ports_flags(), CLUSTER_DIR=str(root / "worker"), PYTHONPATH=str(REPO),
                      **s3_store.env)
    try:
        # start.sh waits for the Ray head and then for the MLflow server; the worker joins as soon as the head's
        # Ray runtime is up, while MLflow is still starting
        start = subprocess.Popen(["bash", str(REPO / "cluster/local/start.sh")], env=head_env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
        head_log = root / "head" / "ray.log"
        deadline = time.time() + 300
        while start.poll() is None and time.time() < deadline and "Ray runtime started" not in _tail(head_log, 100000):
            time.sleep(0.2)
        if start.poll() not in (None, 0):
            pytest.fail(f"start.sh failed: {start.communicate()[0]}{_tail(head_log)}")
        join = subprocess.run(["bash", str(REPO / "cluster/local/join.sh")], env=worker_env, capture_output=True,
                              text=True, timeout=300)
        out, _ = start.communicate(timeout=400)
        assert start.returncode == 0, out + _tail(head_log) + _tail(root / "head" / "mlflow.log")
        assert join.returncode == 0, join.stdout + join.stderr + _tail(root / "worker" / "ray.log")
        env = dict(base_env(), RAY_AUTH_TOKEN=token, RAY_AUTH_MODE="token", PYTHONPATH=str(REPO), DS_ACCELERATOR="cpu",
                   RAY_API_SERVER_ADDRESS=f"http://127.0.0.1:{ports['dash']}", **s3_store.env)
        cluster = TwoNodeCluster(head_dir=root / "head", worker_dir=root / "worker", gcs=gcs,
                                 mlflow_uri=f"http://127.0.0.1:{ports['mlflow']}", env=env, worker_env=worker_env,
                                 s3=s3_store)
        cluster.wait_for_nodes(2)
        EARLY_STOP["two_node_cluster"] = lambda: _stop(worker_env, head_env, s3_server)
        yield cluster
    finally:
        EARLY_STOP.pop("two_node_cluster", None)
        _stop(worker_env, head_env, s3_server)


def _stop(worker_env: dict[str, str], head_env: dict[str, str], s3_server) -> None:
    """Both nodes at once (stop.sh gives each process group up to 10 s to exit), then the S3 server; twice is
    harmless."""
    stops = [threading.Thread(target=stop_node, args=(e,)) for e in (worker_env, head_env)]
    for t in stops:
        t.start()
    for t in stops:
        t.join()
    s3_server.stop()

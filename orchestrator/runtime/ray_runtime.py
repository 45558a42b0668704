"""Connect to, or start, the Ray runtime a job runs on. The only place that calls ``ray.init``."""

from __future__ import annotations

import contextlib
import logging
import os
from contextlib import contextmanager
from typing import Callable, Iterator

from orchestrator.config.cluster import ClusterConfig
from orchestrator.core.console import quiet_env, verbose
from orchestrator.core.dist import free_port

log = logging.getLogger(__name__)

# A private in-process Ray lives and dies with this one job on this one machine: services for long-lived
# clusters only cost start-up time and CPU there (each is one more Python process).
LOCAL_RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",  # no usage report thread (the machine may be offline anyway)
}


def worker_env(cluster: ClusterConfig) -> dict[str, str]:
    """Environment variables every Ray worker of a job needs."""
    env = {
        "TOKENIZERS_PARALLELISM": "false",  # tokenizers' own threads fight Ray's worker processes
        "PYTHONUNBUFFERED": "1",
        "RAY_DEDUP_LOGS": os.environ.get("RAY_DEDUP_LOGS", "1"),
    }
    if not cluster.use_gpu:
        env["DS_ACCELERATOR"] = "cpu"  # DeepSpeed would otherwise probe for CUDA and fail
        env["OMP_NUM_THREADS"] = str(cluster.cpus_per_worker)
    if cluster.address is None:
        env.update(LOCAL_RAY_ENV)
    env.update(quiet_env())
    env.update(cluster.env)
    return env


def local_num_cpus(cluster: ClusterConfig) -> int:
    """Logical CPUs of an in-process local Ray: at least what the worker group asks for."""
    return max(cluster.num_cpus or os.cpu_count() or 1, cluster.num_workers * cluster.cpus_per_worker)


LOCAL_START_TRIES = 3


def _init_local(start: Callable[[], object]) -> None:
    """Start the in-process Ray, again when its raylet did not register within Ray's fixed 30 s (it happens
    on an overloaded machine: "The current node timed out during startup"); other errors are raised."""
    import ray

    for attempt in range(1, LOCAL_START_TRIES + 1):
        try:
            start()
            return
        except Exception as exc:  # noqa: BLE001 - Ray raises a bare Exception for this
            if "timed out during startup" not in str(exc) or attempt == LOCAL_START_TRIES:
                raise
            log.warning("local Ray did not start in time (attempt %d/%d, machine overloaded?); starting it again",
                        attempt, LOCAL_START_TRIES)
            ray.shutdown()


@contextmanager
def _worker_env_for_local_processes(env: dict[str, str]) -> Iterator[None]:
    """``env`` in this process's environment while ``ray.init`` spawns the local Ray (GCS, raylet); the
    raylet passes its environment to every worker process it starts. The driver's own values of these
    variables (a user's ``OMP_NUM_THREADS``, say) come back afterwards; ones it did not set stay set, so
    the driver builds models and data with the workers' settings."""
    saved = {key: os.environ[key] for key in env if key in os.environ}
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.update(saved)


@contextmanager
def _without_service_processes() -> Iterator[None]:
    """Start a private local Ray without two service processes no job here uses.

    * The API server: with ``include_dashboard=False`` Ray 2.60 still starts ``dashboard.py`` with only its
      usage-stats module (usage stats are off here) and ``ray.init`` polls until that process has
      published its URL: a Python process importing aiohttp/grpc (~1.5 s of CPU) and ~1-2 s of the start
      on the 2-core machine, for no dashboard and no Jobs API (a private in-process Ray has neither).
    * The autoscaler monitor (``monitor.py``, ~1 s of CPU while the workers import): a private Ray is one
      node of fixed size, there is nothing to scale.

    Actors, placement groups, Ray Data and the log monitor (worker output to the driver) do not depend on
    either. ``cluster.dashboard=true`` keeps both. Where Ray's private hooks are not there (another Ray
    version) nothing is changed."""
    try:
        from ray._private import node as ray_node
    except ImportError:  # pragma: no cover - a Ray without this module
        yield
        return

    def skip_api_server(self: object, *args: object, **kwargs: object) -> None:
        self._webui_url = None  # type: ignore[attr-defined]  # what ray.init reports as the dashboard URL

    def skip_monitor(self: object, *args: object, **kwargs: object) -> None:
        return None

    patches = {name: fn for name, fn in (("start_api_server", skip_api_server), ("start_monitor", skip_monitor))
               if callable(getattr(ray_node.Node, name, None))}
    originals = {name: getattr(ray_node.Node, name) for name in patches}
    for name, fn in patches.items():
        setattr(ray_node.Node, name, fn)
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(ray_node.Node, name, fn)


EARLY_PRELOAD_ENV = "ORCHESTRATOR_EARLY_PRELOAD"
"""``0`` turns off the early worker imports of a private local Ray (see :func:`ray_session`)."""


@contextmanager
def ray_session(cluster: ClusterConfig, preload: tuple[str, ...] = ()) -> Iterator[None]:
    """Ray for the duration of a job.

    ``cluster.address`` null starts a private local Ray in-process (token auth on, every service on
    127.0.0.1; no dashboard unless ``cluster.dashboard``) and shuts it down afterwards; any other
    address connects to that cluster (``auto`` = the one ``ray start`` runs on this machine). Inside a job that Ray already
    started (a submitted job, a pipeline stage), the existing connection is reused.

    The workers' environment (:func:`worker_env`) reaches a cluster's workers as the job's ``runtime_env``.
    A private local Ray gets it by inheritance instead (its raylet starts with it): a job-level
    ``runtime_env`` would keep Ray from handing the job the worker processes the raylet prestarts while
    ``ray.init`` runs (they carry no runtime env), so every actor would wait for a new process (measured:
    two actors ready 0.6 s after ``ray.init`` instead of 1.6-2.0 s).

    ``preload``: modules every worker process of a private local Ray imports as soon as the raylet starts
    it, before it takes work (Ray's ``preload_python_modules`` running
    :mod:`orchestrator.runtime.worker_preload`). A training or RL job passes what its ranks/roles import
    (torch, transformers, DeepSpeed, ...), so the prestarted workers its hosts will run on import while
    ``ray.init`` still waits for the node and the driver opens MLflow. Jobs whose workers need none of it
    (data_prep, a pipeline whose first stage is data_prep) pass nothing. ``ORCHESTRATOR_EARLY_PRELOAD=0``
    turns it off. A cluster (``cluster.address``) is not started here: its workers are not touched.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    env = worker_env(cluster)
    if cluster.address is None:
        dashboard = {"include_dashboard": False}
        if cluster.dashboard:  # binds 127.0.0.1, behind the same token auth
            dashboard = {"include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": free_port()}
        from orchestrator.runtime.preload import PRELOAD_ENV

        system_config = {}
        early = bool(preload) and os.environ.get(EARLY_PRELOAD_ENV, "1") != "0"
        if early:
            env = {**env, PRELOAD_ENV: ",".join(preload)}
            system_config["preload_python_modules"] = ["orchestrator.runtime.worker_preload"]
        inherited = PRELOAD_ENV in os.environ
        with _worker_env_for_local_processes(env), \
                (contextlib.nullcontext() if cluster.dashboard else _without_service_processes()):
            _init_local(lambda: ray.init(
                address="local",
                num_cpus=local_num_cpus(cluster),
                num_gpus=None if cluster.use_gpu else 0,
                logging_level=logging.WARNING,
                log_to_driver=True,
                logging_config=None if verbose() else ray.LoggingConfig(log_level="WARNING"),
                _system_config=system_config or None,
                **dashboard,
            ))
        if early and not inherited:
            os.environ.pop(PRELOAD_ENV, None)  # the raylet has it; the driver's later subprocesses need not
    else:
        for key, value in env.items():
            os.environ.setdefault(key, value)  # the driver builds models and data too
        address = os.environ.get("RAY_ADDRESS") if cluster.address == "auto" and os.environ.get("RAY_ADDRESS") else cluster.address
        ray.init(address=address, runtime_env={"env_vars": env}, logging_level=logging.WARNING)
    try:
        yield
    finally:
        from orchestrator.runtime.worker_group import forget

        forget()  # the warm hosts die with this Ray
        ray.shutdown()

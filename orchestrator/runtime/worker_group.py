"""The worker group of every training job: one Ray actor per rank, ``torch.distributed`` wired between them,
kept warm for the next job of the same layout in the same Ray session.

Why our own group and not Ray Train's ``TorchTrainer``: measured on the 2-core machine, ``fit()`` took
~24 s before the first line of the training function ran (a controller actor, a placement-group cleaner
that needs the dashboard's State API, and every time new worker processes importing ray.train, torch,
DeepSpeed and transformers) and ~6 s to notice the end. A pipeline paid that at every stage, a test suite at
every test. Here the processes, their imports and their process group outlive a job: the next job with the
same layout (workers, CPUs/GPUs, placement, env) finds them ready (:func:`run_on_group`). One idle group is
kept; anything else that needs the CPUs (another layout, RL roles, Ray Data) calls :func:`release_idle`
first.

Failure handling is what Ray Train's ``FailureConfig`` gave us, without its checkpoint registry (ours is the
commit protocol in :mod:`orchestrator.engine.checkpoint`): any failure of a rank (an exception, the process
or its node lost) kills the whole group at once (surviving ranks would block in a collective); with attempts
left a new group runs the function again, and the training function resumes from the newest committed
checkpoint (``select_resume``). The error that ends a job names the rank, its node and the root cause.

Inside a rank, :func:`rank_context` says who it is (rank, world size, local rank, node); the usual
``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``/``MASTER_PORT`` variables are set for DeepSpeed.
``ORCHESTRATOR_WARM_WORKERS=0`` ends each group with its job.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

log = logging.getLogger(__name__)

WARM_ENV = "ORCHESTRATOR_WARM_WORKERS"


class WorkerGroupError(RuntimeError):
    """The group failed more often than ``max_failures`` allows; the message names the rank and the cause."""


@dataclass(frozen=True)
class GroupSpec:
    """The layout of a group; groups are reused only for an identical spec."""

    num_workers: int
    cpus_per_worker: int = 1
    use_gpu: bool = False
    placement: str = "pack"
    env: tuple[tuple[str, str], ...] = ()
    """Environment of the worker processes (set before anything is imported in them)."""


@dataclass(frozen=True)
class RankContext:
    """Who this process is inside a running group (see :func:`rank_context`)."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    node_rank: int
    node_id: str


_CONTEXT: Optional[RankContext] = None


def rank_context() -> RankContext:
    """This rank's place in the group; only inside a function run by :func:`run_on_group`."""
    if _CONTEXT is None:
        raise RuntimeError("rank_context() is only available inside a worker group's function")
    return _CONTEXT


class GroupWorker:
    """One rank's process (a Ray actor). Imports ``preload`` in the background as soon as it starts, joins
    the group's process group on the first run and keeps it for the group's lifetime."""

    def __init__(self, env: dict[str, str], preload: tuple[str, ...]) -> None:
        os.environ.update(env)
        self._dist_key: Optional[tuple] = None
        self._preload: Any = None
        if preload:
            import threading

            self._preload = threading.Thread(target=_import_all, args=(preload,), daemon=True, name="preload")
            self._preload.start()

    def info(self) -> dict[str, Any]:
        import socket

        import ray

        ctx = ray.get_runtime_context()
        return {"node_id": ctx.get_node_id(), "ip": ray.util.get_node_ip_address(), "pid": os.getpid(),
                "hostname": socket.gethostname(), "gpu_ids": [str(g) for g in ray.get_gpu_ids()]}

    def free_port(self) -> int:
        import socket

        with socket.socket() as s:
            s.bind(("", 0))
            return s.getsockname()[1]

    def run(self, fn: Callable[[Any], Any], config: Any, ctx: RankContext, master: str, backend: str,
            visible_devices: Optional[str]) -> Any:
        global _CONTEXT
        addr, port = master.rsplit(":", 1)
        os.environ.update(RANK=str(ctx.rank), WORLD_SIZE=str(ctx.world_size), LOCAL_RANK=str(ctx.local_rank),
                          LOCAL_WORLD_SIZE=str(ctx.local_world_size), NODE_RANK=str(ctx.node_rank),
                          MASTER_ADDR=addr, MASTER_PORT=port)
        if visible_devices is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = visible_devices  # every GPU of this node's ranks (NCCL P2P)
        if self._preload is not None:  # two threads importing the same modules can deadlock on import locks
            self._preload.join()
            self._preload = None
        self._join(ctx, master, backend)
        _CONTEXT = ctx
        try:
            return fn(config)
        finally:
            _CONTEXT = None
            import gc

            gc.collect()  # the job's engine and data go now, not when the next job allocates

    def _join(self, ctx: RankContext, master: str, backend: str) -> None:
        """Create the process group once per group (DeepSpeed caches groups derived from it)."""
        import torch.distributed as dist

        key = (ctx.rank, ctx.world_size, master, backend)
        if self._dist_key == key and dist.is_initialized():
            return
        if dist.is_initialized():  # never happens for one spec; a fresh group is safer than a stale one
            raise RuntimeError(f"rank already in process group {self._dist_key}, asked to join {key}")
        if backend == "nccl":
            import torch

            torch.cuda.set_device(ctx.local_rank)
        dist.init_process_group(backend, init_method=f"tcp://{master}", rank=ctx.rank, world_size=ctx.world_size)
        self._dist_key = key


def _import_all(modules: tuple[str, ...]) -> None:
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the job imports it again and fails with the real error then
            pass


@dataclass
class _Group:
    spec: GroupSpec
    actors: list[Any]
    pg: Any
    contexts: list[RankContext] = field(default_factory=list)
    master: str = ""
    visible: list[Optional[str]] = field(default_factory=list)
    results: list[Any] = field(default_factory=list)
    jobs: int = 0

    def kill(self) -> None:
        import ray
        from ray.util.placement_group import remove_placement_group

        for actor in self.actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already dead
                pass
        try:
            remove_placement_group(self.pg)
        except Exception:  # noqa: BLE001 - gone with its node or the session
            pass


_IDLE: dict[str, Any] = {"group": None, "session": None}


def _session() -> Optional[str]:
    import ray

    return ray.get_runtime_context().get_job_id() if ray.is_initialized() else None


def release_idle() -> None:
    """Kill the idle warm group (if any) so that its CPUs/GPUs are free for something else."""
    group, _IDLE["group"] = _IDLE["group"], None
    if group is not None and _IDLE["session"] is not None and _IDLE["session"] == _session():
        group.kill()


def forget() -> None:
    """Drop the warm group without killing it (its Ray session is about to end and takes it along)."""
    _IDLE["group"] = _IDLE["session"] = None


def prepare(spec: GroupSpec, preload: tuple[str, ...] = ()) -> None:
    """Start (or keep) the group for ``spec`` without waiting for it, so its processes start and import
    ``preload`` while the driver does other work; :func:`run_on_group` then uses it."""
    _acquire(spec, preload, wait=False)


def _acquire(spec: GroupSpec, preload: tuple[str, ...], wait: bool = True) -> _Group:
    group = _IDLE["group"]
    if group is not None and (_IDLE["session"] != _session() or group.spec != spec):
        release_idle()
        group = None
    if group is None:
        group = _create(spec, preload)
        _IDLE["group"], _IDLE["session"] = group, _session()
    if wait and not group.contexts:
        _wire(group)
    return group


def _create(spec: GroupSpec, preload: tuple[str, ...]) -> _Group:
    import ray
    from ray.util.placement_group import placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    bundle = {"CPU": spec.cpus_per_worker, **({"GPU": 1} if spec.use_gpu else {})}
    pg = placement_group([dict(bundle)] * spec.num_workers, strategy=spec.placement.upper())
    cls = ray.remote(GroupWorker)
    actors = [cls.options(num_cpus=spec.cpus_per_worker, num_gpus=1 if spec.use_gpu else 0, max_restarts=0,
                          scheduling_strategy=PlacementGroupSchedulingStrategy(
                              placement_group=pg, placement_group_bundle_index=i)).remote(dict(spec.env), preload)
              for i in range(spec.num_workers)]
    return _Group(spec, actors, pg)


def _wire(group: _Group, wait_log_s: float = 30.0) -> None:
    """Wait for the placement, then number the ranks node by node (a node holds consecutive ranks, so a
    model-parallel group stays inside a node when a node holds a multiple of it) and pick the master."""
    import ray

    t0 = time.time()
    while not group.pg.wait(timeout_seconds=wait_log_s):
        log.warning("worker group: still waiting for %d x %s (placement %s) after %.0f s; the cluster has %s",
                    group.spec.num_workers, {"CPU": group.spec.cpus_per_worker, "GPU": int(group.spec.use_gpu)},
                    group.spec.placement, time.time() - t0, ray.available_resources())
    infos = ray.get([a.info.remote() for a in group.actors])
    node_order = list(dict.fromkeys(i["node_id"] for i in infos))  # first bundle's node first
    order = sorted(range(len(infos)), key=lambda i: (node_order.index(infos[i]["node_id"]), i))
    group.actors = [group.actors[i] for i in order]
    infos = [infos[i] for i in order]
    world = len(infos)
    for rank, info in enumerate(infos):
        same = [j for j, other in enumerate(infos) if other["node_id"] == info["node_id"]]
        group.contexts.append(RankContext(rank=rank, world_size=world, local_rank=same.index(rank),
                                          local_world_size=len(same), node_rank=node_order.index(info["node_id"]),
                                          node_id=info["node_id"]))
        gpus = sorted({g for j in same for g in infos[j]["gpu_ids"]})
        group.visible.append(",".join(gpus) if group.spec.use_gpu else None)
    one_node = len(node_order) == 1
    addr = "127.0.0.1" if one_node else infos[0]["ip"]  # loopback unless ranks span nodes
    group.master = f"{addr}:{ray.get(group.actors[0].free_port.remote())}"


def run_on_group(spec: GroupSpec, fn: Callable[[Any], Any], config: Any, *, max_failures: int = 0,
                 preload: tuple[str, ...] = (), what: str = "worker group") -> list[Any]:
    """Run ``fn(config)`` on every rank of a group with layout ``spec``; returns each rank's result.

    A failure kills the group; up to ``max_failures`` times a new group runs ``fn`` again.

    Raises:
        WorkerGroupError: more than ``max_failures`` failures (chained to the root cause's exception).
    """
    failures = 0
    while True:
        group = _start(spec, preload)
        error = _run_once(group, fn, config)
        if error is None:
            group.jobs += 1
            if os.environ.get(WARM_ENV, "1") == "0":
                release_idle()
            return group.results
        _IDLE["group"] = None
        group.kill()
        failures += 1
        rank, exc = error
        ctx = group.contexts[rank]
        where = f"rank {rank} of {ctx.world_size} (node {ctx.node_id[:12]})"
        if failures > max_failures:
            raise WorkerGroupError(f"{what} failed {failures} time(s) (max_failures={max_failures}); "
                                   f"{where}: {_describe(exc)}") from exc
        log.warning("%s: %s failed (%s); restarting the group (%d/%d)", what, where, _describe(exc), failures,
                    max_failures)


def _start(spec: GroupSpec, preload: tuple[str, ...], attempts: int = 5) -> _Group:
    """The wired group; a start that loses an actor (its node died after the placement was granted, before
    Ray noticed) is retried with a new group: such retries wait for capacity and do not count as failures."""
    import ray

    for attempt in range(1, attempts + 1):
        try:
            return _acquire(spec, preload)
        except ray.exceptions.RayActorError as exc:
            group, _IDLE["group"] = _IDLE["group"], None
            if group is not None:
                group.kill()
            if attempt == attempts:
                raise WorkerGroupError(f"could not start the worker group ({attempts} tries): {_describe(exc)}") from exc
            log.warning("worker group: a worker was lost while starting (%s); starting a new group", _describe(exc))
            time.sleep(min(30.0, 2.0 * attempt))
    raise AssertionError("unreachable")


def _run_once(group: _Group, fn: Callable[[Any], Any], config: Any) -> Optional[tuple[int, BaseException]]:
    """Run on every rank; on the first failure collect what else failed within a moment and return the
    root cause (a lost process beats the errors it caused in the others), else None (results in group)."""
    import ray

    refs = [actor.run.remote(fn, config, ctx, group.master, "nccl" if group.spec.use_gpu else "gloo", visible)
            for actor, ctx, visible in zip(group.actors, group.contexts, group.visible)]
    pending, errors = list(refs), {}
    deadline = None
    while pending and (deadline is None or time.time() < deadline):
        timeout = None if deadline is None else max(0.0, deadline - time.time())
        done, pending = ray.wait(pending, num_returns=1, timeout=timeout)
        for ref in done:
            try:
                ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - any failure ends this attempt
                errors[refs.index(ref)] = exc
                deadline = deadline or time.time() + 3.0  # peers of a dead rank fail within a moment
    if not errors:
        group.results = ray.get(refs)
        return None
    lost = [r for r, e in sorted(errors.items()) if isinstance(e, ray.exceptions.RayActorError)]
    rank = lost[0] if lost else min(errors)
    return rank, errors[rank]


def _describe(exc: BaseException) -> str:
    """One readable line: a rank's own exception (unwrapped from Ray's task error) or how it was lost."""
    import ray

    if isinstance(exc, ray.exceptions.RayActorError):
        return "the worker process died (killed, out of memory, or its node was lost)"
    if isinstance(exc, ray.exceptions.RayTaskError) and getattr(exc, "cause", None) is not None:
        exc = exc.cause
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:500]

"""Warm worker processes for every job of a Ray session: training ranks and RL roles run in *hosts*, Ray actors
that outlive a job, so the next job (a pipeline's next stage, a sweep's next point, the next test) finds
Python, torch, DeepSpeed and transformers already imported.

Why not Ray Train's ``TorchTrainer`` (what training used before): measured on the 2-core machine, ``fit()``
took ~24 s before the first line of the training function ran (a controller actor, a placement-group
cleaner needing the dashboard's State API, and every time new worker processes importing ray.train, torch,
DeepSpeed and transformers) and ~6 s to notice the end; PPO's role actors paid the same imports again. A
pipeline paid that at every stage, a test suite at every test.

Resources: a host reserves nothing itself (``num_cpus=0``). Each job reserves what it uses with its own
placement group (a bundle per training rank or per TP/PP group, or the RL roles' bundles) and borrows one idle
host per rank or role on the node where its bundle was granted (a new host when none is idle there), so idle
hosts never keep CPUs/GPUs from other work and the job's reservation goes when the job ends. Hosts are reused
only with the same environment (set before anything is imported in them) and the same devices. At most
:data:`MAX_IDLE` hosts stay idle; ``ORCHESTRATOR_WARM_WORKERS=0`` ends every host with its job.

Failure handling (training; what Ray Train's ``FailureConfig`` gave us, without its checkpoint registry: ours
is the commit protocol in :mod:`orchestrator.engine.checkpoint`): any failure of a rank (an exception, the
process or its node lost) kills the job's hosts at once (surviving ranks would block in a collective); with
attempts left new hosts run the function again, and the training function resumes from the newest committed
checkpoint (``select_resume``). The error that ends a job names the rank, its node and the root cause.
Inside a rank, :func:`rank_context` says who it is; ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``/
``MASTER_PORT`` are set for DeepSpeed. A job that leaves a host its process group tears it down (with
DeepSpeed's cached groups) before the host goes back to the pool.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

log = logging.getLogger(__name__)

WARM_ENV = "ORCHESTRATOR_WARM_WORKERS"
MAX_IDLE = 6
"""Idle hosts kept per session (a host with the stack imported holds ~0.5-1 GB of host memory)."""


class WorkerGroupError(RuntimeError):
    """The group failed more often than ``max_failures`` allows; the message names the rank and the cause."""


class RendezvousError(RuntimeError):
    """A rank could not join the group's ``torch.distributed`` process group: nothing of the job ran yet, so
    :func:`orchestrator.runtime.rank_group.run_on_group` forms the group again on new hosts without counting a
    failure (gloo's full-mesh connect between fresh processes fails now and then on a loaded machine:
    "Connection closed by peer" with every process alive)."""


@dataclass(frozen=True)
class GroupSpec:
    """The layout of a training job's worker group."""

    num_workers: int
    cpus_per_worker: int = 1
    use_gpu: bool = False
    placement: str = "pack"
    env: tuple[tuple[str, str], ...] = ()
    """Environment of the worker processes (set before anything is imported in them)."""
    model_parallel: int = 1
    """Ranks of one tensor/pipeline-parallel group (tp*pp): they get one placement-group bundle together, so
    Ray puts the whole group on one node, and consecutive ranks."""


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


# ---------------------------------------------------------------------------------------------- the host actor
class WorkerHost:
    """One warm process (a Ray actor). Runs a training rank's function (:meth:`run`) or hosts an object (an
    RL role: :meth:`construct` / :meth:`invoke`); :meth:`release` makes it clean for the next job."""

    def __init__(self, env: dict[str, str], preload: tuple[str, ...]) -> None:
        os.environ.update(env)
        self._objs: dict[str, Any] = {}  # hosted role objects by name (several roles may share a process)
        self._preload: Any = None
        if preload:
            import threading

            self._preload = threading.Thread(target=_import_all, args=(preload,), daemon=True, name="preload")
            self._preload.start()

    def info(self) -> dict[str, Any]:
        import socket

        import ray

        return {"node_id": ray.get_runtime_context().get_node_id(), "ip": ray.util.get_node_ip_address(),
                "pid": os.getpid(), "hostname": socket.gethostname()}

    def free_port(self) -> int:
        import socket

        with socket.socket() as s:
            s.bind(("", 0))
            return s.getsockname()[1]

    def pack_dir(self, path: str, remove: bool = False) -> bytes:
        """A directory this host wrote, as tar bytes: brings a file output (a role's export) from this node to
        the driver's, when they differ and do not share a disk. ``remove``: delete it here afterwards."""
        import io
        import shutil
        import tarfile

        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.add(path, arcname=".")
        if remove:
            shutil.rmtree(path, ignore_errors=True)
        return buf.getvalue()

    def _ready(self, devices: Optional[str]) -> None:
        if devices is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = devices  # every GPU of this node's ranks (NCCL P2P)
        if self._preload is not None:  # two threads importing the same modules can deadlock on import locks
            self._preload.join()
            self._preload = None

    def run(self, fn: Callable[[Any], Any], config: Any, ctx: RankContext, master: str, backend: str,
            devices: Optional[str]) -> Any:
        global _CONTEXT
        self._ready(devices)  # first: the preload thread may still be importing torch (a concurrent
        import torch.distributed as dist  # import of torch.distributed aborted fresh hosts in c10d_init)

        addr, port = master.rsplit(":", 1)
        os.environ.update(RANK=str(ctx.rank), WORLD_SIZE=str(ctx.world_size), LOCAL_RANK=str(ctx.local_rank),
                          LOCAL_WORLD_SIZE=str(ctx.local_world_size), NODE_RANK=str(ctx.node_rank),
                          MASTER_ADDR=addr, MASTER_PORT=port)
        if backend == "nccl":
            import torch

            torch.cuda.set_device(ctx.local_rank)
        try:
            dist.init_process_group(backend, init_method=f"tcp://{master}", rank=ctx.rank, world_size=ctx.world_size)
        except Exception as exc:  # noqa: BLE001 - any failure to join is a rendezvous failure
            if dist.is_initialized():
                dist.destroy_process_group()
            raise RendezvousError(f"rank {ctx.rank} could not join the process group at {master}: "
                                  f"{type(exc).__name__}: {exc}") from exc
        _CONTEXT = ctx
        try:
            return fn(config)
        finally:
            _CONTEXT = None
            self.release()

    def construct(self, cls: type, args: tuple, kwargs: dict, devices: Optional[str], name: str = "role") -> None:
        """Build a role object ``cls(*args, **kwargs)`` here under ``name`` (a host can hold several roles)."""
        self._ready(devices)
        self._objs[name] = cls(*args, **kwargs)

    def invoke(self, method: str, args: tuple, kwargs: dict, name: str = "role") -> Any:
        return getattr(self._objs[name], method)(*args, **kwargs)

    def release(self) -> None:
        """Drop the hosted object and the job's process group (DeepSpeed's cached groups with it)."""
        import gc
        import sys

        dist = sys.modules.get("torch.distributed")
        joined = dist is not None and dist.is_available() and dist.is_initialized()
        if not self._objs and not joined:
            return  # nothing of a job left (a training rank released itself at the end of run())
        self._objs.clear()
        if joined:
            dist.destroy_process_group()
        _reset_deepspeed_groups()
        gc.collect()  # the job's engine and data go now, not when the next job allocates


def _reset_deepspeed_groups() -> None:
    """DeepSpeed keeps the process groups it derived in module globals; a new job must not find the last
    job's (destroyed) groups there."""
    import sys

    groups = sys.modules.get("deepspeed.utils.groups")
    if groups is not None:
        for name in ("_EXPERT_PARALLEL_GROUP", "_EXPERT_PARALLEL_GROUP_RANKS", "_EXPERT_DATA_PARALLEL_GROUP",
                     "_EXPERT_DATA_PARALLEL_GROUP_RANKS", "_ALL_TO_ALL_GROUP"):
            if isinstance(getattr(groups, name, None), dict):
                getattr(groups, name).clear()
        for name in ("_WORLD_GROUP", "_ZERO_PARAM_INTRA_PARALLEL_GROUP", "mpu", "mesh_device",
                     "_TENSOR_MODEL_PARALLEL_GROUP", "_MODEL_PARALLEL_GROUP", "_DATA_PARALLEL_GROUP",
                     "_MPU_TENSOR_MODEL_PARALLEL_WORLD_SIZE", "_MPU_TENSOR_MODEL_PARALLEL_RANK"):
            if hasattr(groups, name):
                setattr(groups, name, None)
    comm = sys.modules.get("deepspeed.comm.comm")
    if comm is not None and hasattr(comm, "cdb"):
        comm.cdb = None
    _reset_zero3_ids()


def _reset_zero3_ids() -> None:
    """ZeRO-3 numbers modules and parameters with process-wide counters (a module counter kept in the default
    argument of ``DeepSpeedZeRoOffload._register_deepspeed_module``, ``Init.param_id``) and checks that every rank
    got the same numbers: a warm host that ran a ZeRO-3 job before would disagree with a fresh one in the next
    job's group ("Detected a disagreement on list contents between rank0 and rank1"). Back to a fresh process's
    zeros."""
    import sys

    offload = sys.modules.get("deepspeed.runtime.zero.parameter_offload")
    register = getattr(getattr(offload, "DeepSpeedZeRoOffload", None), "_register_deepspeed_module", None)
    defaults = getattr(register, "__defaults__", None) or ()
    if defaults and isinstance(defaults[-1], list) and defaults[-1]:
        defaults[-1][0] = 0
    partition = sys.modules.get("deepspeed.runtime.zero.partition_parameters")
    init = getattr(partition, "Init", None)
    if init is not None and hasattr(init, "param_id"):
        init.param_id = 0


def _import_all(modules: tuple[str, ...]) -> None:
    from orchestrator.runtime.preload import import_modules

    import_modules(modules)  # without the optional imports nothing here uses (~3 s of CPU less per process)


# ---------------------------------------------------------------------------------------------- the pool
@dataclass
class Host:
    """A borrowed host: its actor handle and where it runs."""

    actor: Any
    node_id: str
    env: tuple[tuple[str, str], ...]
    devices: Optional[str]
    pid: int = 0
    ip: str = ""


_POOL: dict[str, Any] = {"idle": [], "session": None}


def _session() -> Optional[str]:
    import ray

    return ray.get_runtime_context().get_job_id() if ray.is_initialized() else None


def _idle() -> list[Host]:
    if _POOL["session"] != _session():
        _POOL["idle"], _POOL["session"] = [], _session()
    return _POOL["idle"]


def driver_node() -> Optional[str]:
    """The node id of this (driver) process; None when Ray cannot tell (a Ray Client driver)."""
    import ray

    try:
        return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - e.g. Ray Client mode
        return None


def unpack_dir(data: bytes, path: str | os.PathLike) -> None:
    """Write the tar bytes of :meth:`WorkerHost.pack_dir` into ``path`` (on this node)."""
    import io
    import tarfile

    os.makedirs(path, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        tar.extractall(path, filter="data")


def forget() -> None:
    """Drop the pool without killing (its Ray session is about to end and takes the hosts along)."""
    _POOL["idle"], _POOL["session"] = [], None


def release_idle() -> None:
    """Kill every idle host (frees their memory; they hold no CPUs/GPUs)."""
    idle = _idle()
    kill_hosts(list(idle))
    idle.clear()


def kill_hosts(hosts: Sequence[Host]) -> None:
    import ray

    for h in hosts:
        try:
            ray.kill(h.actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already dead
            pass


def identify(hosts: Sequence[Host]) -> None:
    """Fill ``pid`` and ``ip`` of the hosts that lack them, all in one round trip (a host's process and node never
    change, so a host borrowed again is not asked twice)."""
    import ray

    unknown = list({id(h): h for h in hosts if not h.pid}.values())
    for h, info in zip(unknown, ray.get([h.actor.info.remote() for h in unknown])):
        h.pid, h.ip = info["pid"], info["ip"]


def give_back(hosts: Sequence[Host], timeout_s: float = 60.0) -> bool:
    """Return healthy hosts (their job's state released) to the pool; the oldest idle ones beyond
    :data:`MAX_IDLE` are killed. When one of them cannot release within ``timeout_s`` (dead, or still busy:
    stuck in a collective with a lost peer, say) all of them are killed instead; returns whether they went
    back."""
    if os.environ.get(WARM_ENV, "1") == "0":
        kill_hosts(hosts)
        return False
    if not _all_done([h.actor.release.remote() for h in hosts], timeout_s):
        kill_hosts(hosts)  # a host that cannot clean up is not reused
        return False
    idle = _idle()
    idle.extend(hosts)
    while len(idle) > MAX_IDLE:
        kill_hosts([idle.pop(0)])
    return True


def _all_done(refs: Sequence[Any], timeout_s: float) -> bool:
    """Whether every one of ``refs`` finishes without an error within ``timeout_s``; ``False`` as soon as one
    fails (a dead host answers at once; the others need not be waited for)."""
    import time

    import ray

    deadline, pending = time.monotonic() + timeout_s, list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
        if not ready:
            return False
        try:
            ray.get(ready[0])
        except Exception:  # noqa: BLE001 - dead or failed: not reusable
            return False
    return True


def bundle_nodes(pg: Any, indices: Sequence[int]) -> list[str]:
    """The node id of each bundle of ``indices`` (``pg`` ready), as the GCS placed them: no task, so no
    worker process started per node just to ask (a CPU bundle needs nothing else; GPU bundles are probed for
    their device ids, see :func:`_probe`). A bundle on a node that died before Ray noticed names that node; the
    host started there then fails like one that died, and the caller starts a new group."""
    from ray.util.placement_group import placement_group_table

    nodes = placement_group_table(pg)["bundles_to_node_id"]
    return [nodes[i] for i in indices]


def _probe(pg: Any, bundles: Sequence[dict[str, float]], indices: Sequence[int],
           timeout_s: Optional[float] = None) -> list[tuple[str, Optional[str]]]:
    """(node id, visible GPU ids or None) of each bundle, by a tiny task placed in it (``GetTimeoutError``
    after ``timeout_s``)."""
    import ray
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    def where() -> tuple[str, list[str]]:
        return ray.get_runtime_context().get_node_id(), [str(g) for g in ray.get_gpu_ids()]

    task = ray.remote(where)
    refs = [task.options(num_cpus=0, num_gpus=bundles[i].get("GPU", 0), scheduling_strategy=PlacementGroupSchedulingStrategy(
        placement_group=pg, placement_group_bundle_index=i)).remote() for i in indices]
    out = []
    for node, gpus in ray.get(refs, timeout=timeout_s):
        out.append((node, ",".join(gpus) if gpus else None))
    return out


def borrow(pg: Any, bundles: Sequence[dict[str, float]], indices: Sequence[int], env: dict[str, str],
           preload: tuple[str, ...] = (), probe_timeout_s: Optional[float] = None) -> list[Host]:
    """One host per entry of ``indices`` (``pg`` must be ready): an idle host on that bundle's node with this
    env and devices, else a new one there (it starts importing ``preload`` at once).

    An index may repeat: the ranks of a model-parallel group share one bundle (it holds all their
    resources, so Ray keeps them on one node); a bundle's GPUs are then split among its hosts in order.
    ``probe_timeout_s``: how long asking the bundles where they are may take (``GetTimeoutError`` after it)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    key = tuple(sorted(env.items()))
    alive = [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
    gpus = any(bundles[i].get("GPU") for i in indices)
    if not gpus and len(alive) == 1:
        places = [(alive[0], None)] * len(indices)  # one node, no devices: nothing to ask the bundles
    elif not gpus:
        places = [(node, None) for node in bundle_nodes(pg, indices)]
    else:
        distinct = list(dict.fromkeys(indices))
        places = share_bundles(indices, dict(zip(distinct, _probe(pg, bundles, distinct, probe_timeout_s))))
    idle, hosts = _idle(), []
    idle[:] = [h for h in idle if h.node_id in alive]  # hosts of a lost node went with it (a rejoined node has a new id)
    cls = ray.remote(WorkerHost)
    for node, devices in places:
        match = next((h for h in idle if h.node_id == node and h.env == key and h.devices == devices), None)
        if match is not None:
            idle.remove(match)
            hosts.append(match)
            continue
        actor = cls.options(num_cpus=0, max_restarts=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
            node_id=node, soft=False)).remote(dict(env), preload)
        hosts.append(Host(actor, node, key, devices))
    return hosts


def share_bundles(indices: Sequence[int], where: dict[int, tuple[str, Optional[str]]]) -> list[tuple[str, Optional[str]]]:
    """(node id, GPU ids) of each host from its bundle's (``where``): hosts sharing a bundle get its node and
    an equal, ordered share of its GPUs (all of them when there are fewer GPUs than hosts)."""
    count = {i: list(indices).count(i) for i in where}
    taken: dict[int, int] = {}
    out = []
    for i in indices:
        node, gpus = where[i]
        j = taken[i] = taken.get(i, -1) + 1
        ids = gpus.split(",") if gpus else []
        per = len(ids) // count[i]
        if per:
            gpus = ",".join(ids[j * per:(j + 1) * per])
        out.append((node, gpus))
    return out


def prewarm(num: int, env: dict[str, str], preload: tuple[str, ...]) -> None:
    """On a one-node Ray, start hosts for an upcoming job now (they import ``preload`` while the driver
    does other work) unless enough idle ones are there; they join the idle pool."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if os.environ.get(WARM_ENV, "1") == "0":
        return
    nodes = [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
    if len(nodes) != 1:
        return  # which nodes the job lands on is known only once its placement group is granted
    key = tuple(sorted(env.items()))
    idle = _idle()
    have = sum(1 for h in idle if h.node_id == nodes[0] and h.env == key and h.devices is None)
    cls = ray.remote(WorkerHost)
    for _ in range(max(0, num - have)):
        actor = cls.options(num_cpus=0, max_restarts=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
            node_id=nodes[0], soft=False)).remote(dict(env), preload)
        idle.append(Host(actor, nodes[0], key, None))

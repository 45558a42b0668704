"""A training job's ranks on warm hosts (:mod:`orchestrator.runtime.worker_group`): a placement group with a
bundle per rank (per model-parallel group when tp*pp > 1), one borrowed host per rank, ranks numbered node
by node, ``torch.distributed`` wired, the function run on every rank; failures kill the hosts and restart the
group up to ``max_failures`` times, with fewer data-parallel ranks when :class:`Elastic` allows it and the full
group does not fit any more."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from orchestrator.config.plan import model_parallel_groups
from orchestrator.runtime.worker_group import (GroupSpec, Host, RankContext, RendezvousError, WorkerGroupError, borrow,
                                               driver_node, give_back, identify, kill_hosts, prewarm)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Elastic:
    """How a restarted group may shrink (``cluster.min_workers``).

    A restart first asks for the full ``num_workers`` group; when it is not granted within ``wait_s`` (a node
    was lost and nothing replaced it), each of ``world_sizes`` is tried, largest first, and the group runs
    with the first that fits (the smallest one waits for as long as it takes, like a full group without
    elasticity). ``resize(config, world_size)`` returns the function's config for that world size (the
    caller keeps the global batch and the data order; see ``orchestrator.training.elastic``).
    """

    world_sizes: tuple[int, ...]
    wait_s: float
    resize: Callable[[Any, int], Any]


SMALLER_TRY_S = 5.0
"""How long a restart waits for each smaller world size but the smallest: the capacity left is known by then
(a placement group that fits is granted within a second), so this only covers the release of the last
group's bundles."""


RENDEZVOUS_RETRIES = 2
"""How many times a group whose process group could not form (:class:`RendezvousError` on every failing rank,
before the function ran anywhere) is formed again on new hosts without counting against ``max_failures``."""


PROBE_TIMEOUT_S = 60.0
"""How long borrowing a group may wait for its GPU bundles' probe (about a second normally; CPU bundles' nodes
come from the GCS's placement-group table, no probe): a bundle granted on a node that died before Ray's health
checks noticed is rescheduled and may find no room left on the other nodes, so its probe would wait forever;
the timeout makes :func:`_start` release the group and reserve a new one."""


def prepare(spec: GroupSpec, preload: tuple[str, ...] = ()) -> None:
    """Start hosts for ``spec`` now (one-node Ray; CPU), so they import ``preload`` while the driver does
    other work; :func:`run_on_group` then borrows them."""
    if not spec.use_gpu:
        prewarm(spec.num_workers, dict(spec.env), preload)


def run_on_group(spec: GroupSpec, fn: Callable[[Any], Any], config: Any, *, max_failures: int = 0,
                 preload: tuple[str, ...] = (), what: str = "worker group",
                 elastic: Optional[Elastic] = None) -> list[Any]:
    """Run ``fn(config)`` on every rank of a group with layout ``spec``; returns each rank's result.

    A failure kills the group's hosts; up to ``max_failures`` times a new group runs ``fn`` again. With
    ``elastic``, a restart that cannot get ``spec.num_workers`` ranks runs with fewer (``fn`` then gets
    ``elastic.resize(config, world_size)``; the result has one entry per rank that ran).

    Raises:
        WorkerGroupError: more than ``max_failures`` failures (chained to the root cause's exception).
    """
    failures = rendezvous = 0
    while True:
        sizes = (spec.num_workers, *(elastic.world_sizes if elastic is not None and failures else ()))
        pg, hosts, contexts, master, devices = _start(spec, preload, sizes, elastic.wait_s if elastic else 0.0)
        world = len(hosts)
        run_config = config
        if world != spec.num_workers:
            assert elastic is not None
            run_config = elastic.resize(config, world)
            log.warning("%s: restarting with %d of %d ranks (cluster.min_workers): the full group did not get its "
                        "resources within %.0f s", what, world, spec.num_workers, elastic.wait_s)
        try:
            error, results = _run_once(hosts, contexts, master, devices, spec.use_gpu, fn, run_config)
            if error is None:
                give_back(hosts)
                return results
            kill_hosts(hosts)
        finally:
            _remove(pg)
        rank, exc = error
        ctx = contexts[rank]
        where = f"rank {rank} of {ctx.world_size} (node {ctx.node_id[:12]})"
        if isinstance(_cause(exc), RendezvousError) and rendezvous < RENDEZVOUS_RETRIES:
            rendezvous += 1
            log.warning("%s: %s could not join the process group (%s); forming the group again on new hosts "
                        "(%d/%d, not counted as a failure)", what, where, describe(exc), rendezvous,
                        RENDEZVOUS_RETRIES)
            continue
        failures += 1
        if failures > max_failures:
            raise WorkerGroupError(f"{what} failed {failures} time(s) (max_failures={max_failures}); "
                                   f"{where}: {describe(exc)}") from exc
        log.warning("%s: %s failed (%s); restarting the group (%d/%d)", what, where, describe(exc), failures,
                    max_failures)


def group_bundles(spec: GroupSpec, world: int) -> tuple[list[dict[str, float]], list[int]]:
    """The placement group's bundles for ``world`` ranks and each rank's bundle index (in rank order before
    :func:`_wire` renumbers by node). One bundle per model-parallel group (``spec.model_parallel``
    consecutive ranks) with the resources of all its ranks: a bundle is never split across nodes, so Ray
    places each TP/PP group on one node as a whole, whatever the strategy; with ``model_parallel=1`` that is
    a bundle per rank."""
    per_rank = {"CPU": float(spec.cpus_per_worker), **({"GPU": 1.0} if spec.use_gpu else {})}
    groups = model_parallel_groups(world, spec.model_parallel)
    return ([{k: v * len(g) for k, v in per_rank.items()} for g in groups],
            [i for i, g in enumerate(groups) for _ in g])


def _remove(pg: Any) -> None:
    from ray.util.placement_group import remove_placement_group

    try:
        remove_placement_group(pg)
    except Exception:  # noqa: BLE001 - gone with its node or the session
        pass


def _start(spec: GroupSpec, preload: tuple[str, ...], sizes: Sequence[int] = (), wait_s: float = 0.0,
           attempts: int = 5) -> tuple:
    """Reserve (the first of ``sizes`` that fits, see :func:`_reserve_sized`), borrow and wire a group; a start
    that loses a host (its node died after the placement was granted, before Ray noticed) is retried: such
    retries wait for capacity and do not count as failures."""
    import ray

    sizes = tuple(sizes) or (spec.num_workers,)
    lost = (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError, ray.exceptions.NodeDiedError,
            ray.exceptions.WorkerCrashedError, ray.exceptions.TaskUnschedulableError,
            ray.exceptions.ActorUnschedulableError)
    for attempt in range(1, attempts + 1):
        pg, world = _reserve_sized(spec, sizes, wait_s)
        bundles, indices = group_bundles(spec, world)
        hosts: list[Host] = []
        try:
            hosts = borrow(pg, bundles, indices, dict(spec.env), preload, PROBE_TIMEOUT_S)
            return (pg, *_wire(hosts, spec.model_parallel), )
        except lost as exc:  # a host, or a bundle's probe, on a dead node
            kill_hosts(hosts)
            _remove(pg)
            if attempt == attempts:
                raise WorkerGroupError(f"could not start the worker group ({attempts} tries): {describe(exc)}") from exc
            log.warning("worker group: a worker was lost while starting (%s); starting a new group", describe(exc))
            time.sleep(min(30.0, 2.0 * attempt))
    raise AssertionError("unreachable")


def _reserve_sized(spec: GroupSpec, sizes: Sequence[int], wait_s: float) -> tuple[Any, int]:
    """A ready placement group for the first world size of ``sizes`` that fits, and that size: the first
    is given ``wait_s``, the others but the last :data:`SMALLER_TRY_S`, the last as long as it takes."""
    import ray

    for i, world in enumerate(sizes):
        bundles, _ = group_bundles(spec, world)
        pg = _reserve(bundles, spec.placement.upper())
        if i == len(sizes) - 1:
            _wait(pg, spec, world)
            return pg, world
        if pg.wait(timeout_seconds=wait_s if i == 0 else SMALLER_TRY_S):
            return pg, world
        _remove(pg)
        log.warning("worker group: no room for %d ranks (the cluster has %s free); trying %d", world,
                    ray.available_resources(), sizes[i + 1])
    raise AssertionError("unreachable")


PACK_ON_DRIVER_WAIT_S = 5.0
"""How long ``pack`` waits for the whole group on the driver's node before packing it anywhere."""


def _reserve(bundles: list[dict[str, float]], strategy: str) -> Any:
    """The job's placement group. ``PACK`` is first tried as one node, the driver's (``STRICT_PACK`` with
    the driver's node as Ray's soft target), when that node is big enough: rank 0 writes the output
    directory, and on a cluster without a shared workspace only the driver's node has it. Ray's ``PACK``
    alone takes no node preference (seen on the two-node test cluster: both ranks on the other node).
    If the group does not get there within :data:`PACK_ON_DRIVER_WAIT_S` (the node is busy), plain
    ``PACK`` decides."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    if strategy == "PACK":
        driver = driver_node()
        need = {k: sum(b.get(k, 0.0) for b in bundles) for k in ("CPU", "GPU")}
        node = next((n for n in ray.nodes() if n.get("NodeID") == driver and n.get("Alive")), None)
        if node is not None and all(node.get("Resources", {}).get(k, 0.0) >= v for k, v in need.items() if v):
            try:
                pg = placement_group(bundles, strategy="STRICT_PACK", _soft_target_node_id=driver)
            except TypeError:  # pragma: no cover - a Ray without the soft target
                pg = None
            if pg is not None:
                if pg.wait(timeout_seconds=PACK_ON_DRIVER_WAIT_S):
                    return pg
                remove_placement_group(pg)
                log.info("worker group: the driver's node has no room for the whole group now; packing elsewhere")
    return placement_group(bundles, strategy=strategy)


def _wait(pg: Any, spec: GroupSpec, world: int, every_s: float = 30.0) -> None:
    import ray

    t0 = time.time()
    while not pg.wait(timeout_seconds=every_s):
        log.warning("worker group: still waiting for %d x %s (placement %s) after %.0f s; the cluster has %s free",
                    world, {"CPU": spec.cpus_per_worker, "GPU": int(spec.use_gpu)}, spec.placement,
                    time.time() - t0, ray.available_resources())


def _wire(hosts: list[Host], model_parallel: int = 1) -> tuple[list[Host], list[RankContext], str, list[Optional[str]]]:
    """Number the ranks (:func:`rank_order`), fill each rank's context and pick the master (loopback unless
    ranks span nodes)."""
    import ray

    identify(hosts)
    driver = driver_node()
    order, node_order = rank_order([h.node_id for h in hosts], driver)
    if driver is not None and node_order[0] != driver:
        log.warning("worker group: no rank runs on the driver's node %s; rank 0 (node %s) writes the output "
                    "directory on its own disk (use a shared workspace)", driver[:12], node_order[0][:12])
    hosts = [hosts[i] for i in order]
    assert all(len({hosts[r].node_id for r in g}) == 1 for g in model_parallel_groups(len(hosts), model_parallel)), \
        "a model-parallel group spans nodes although it had one bundle"
    contexts, devices = [], []
    for rank, h in enumerate(hosts):
        same = [j for j, other in enumerate(hosts) if other.node_id == h.node_id]
        contexts.append(RankContext(rank=rank, world_size=len(hosts), local_rank=same.index(rank),
                                    local_world_size=len(same), node_rank=node_order.index(h.node_id),
                                    node_id=h.node_id))
        gpus = sorted({g for j in same for g in (hosts[j].devices or "").split(",") if g})
        devices.append(",".join(gpus) if gpus else None)
    addr = "127.0.0.1" if len(node_order) == 1 else hosts[0].ip
    master = f"{addr}:{ray.get(hosts[0].actor.free_port.remote())}"
    return hosts, contexts, master, devices


def rank_order(node_ids: Sequence[str], driver: Optional[str]) -> tuple[list[int], list[str]]:
    """(host index of each rank, the nodes in rank order) for hosts on ``node_ids`` (in bundle order).

    Ranks go node by node (a node holds consecutive ranks), the driver's node first whenever a host is
    there: rank 0 writes the job's output directory (step records the driver follows, eval.json,
    placement.json, the export the driver registers), and on a multi-node cluster without a shared
    workspace only the driver's node has that directory. Inside a node the bundle order stays (a stable
    sort), so the hosts of one model-parallel bundle, adjacent in bundle order and always on one node, stay
    adjacent; every node holds whole groups, so each group is ``model_parallel`` consecutive ranks starting
    at a multiple of it: exactly the group DeepSpeed's topology builds from those ranks."""
    node_order = list(dict.fromkeys(node_ids))  # the first bundle's node first
    if driver in node_order:
        node_order.remove(driver)
        node_order.insert(0, driver)
    return sorted(range(len(node_ids)), key=lambda i: node_order.index(node_ids[i])), node_order


def _run_once(hosts: list[Host], contexts: list[RankContext], master: str, devices: list[Optional[str]],
              use_gpu: bool, fn: Callable[[Any], Any], config: Any) -> tuple[Optional[tuple[int, BaseException]], list]:
    """Run on every rank; on the first failure collect what else fails within a moment and return the root
    cause (a lost process beats the errors it caused in the others), else (None, results)."""
    import ray

    backend = "nccl" if use_gpu else "gloo"
    refs = [h.actor.run.remote(fn, config, ctx, master, backend, dev) for h, ctx, dev in zip(hosts, contexts, devices)]
    pending, errors = list(refs), {}
    deadline: Optional[float] = None
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
        return None, ray.get(refs)
    lost = [r for r, e in sorted(errors.items()) if isinstance(e, ray.exceptions.RayActorError)]
    # a rank that failed after joining (its own error) is the cause of its peers' rendezvous errors
    own = [r for r, e in sorted(errors.items()) if not isinstance(_cause(e), RendezvousError)]
    rank = lost[0] if lost else (own[0] if own else min(errors))
    return (rank, errors[rank]), []


def _cause(exc: BaseException) -> BaseException:
    """A rank's own exception, unwrapped from Ray's task error."""
    import ray

    if isinstance(exc, ray.exceptions.RayTaskError) and getattr(exc, "cause", None) is not None:
        return exc.cause
    return exc


def describe(exc: BaseException) -> str:
    """One readable line: a rank's own exception (unwrapped from Ray's task error) or how it was lost."""
    import ray

    if isinstance(exc, ray.exceptions.RayActorError):
        return "the worker process died (killed, out of memory, or its node was lost)"
    exc = _cause(exc)
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:500]

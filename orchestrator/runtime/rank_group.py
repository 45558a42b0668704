"""A training job's ranks on warm hosts (:mod:`orchestrator.runtime.worker_group`): a placement group with a
bundle per rank, one borrowed host per bundle, ranks numbered node by node, ``torch.distributed`` wired, the
function run on every rank; failures kill the hosts and restart the group up to ``max_failures`` times."""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Optional

from orchestrator.runtime.worker_group import (GroupSpec, Host, RankContext, WorkerGroupError, borrow, driver_node,
                                               give_back, kill_hosts, prewarm)

log = logging.getLogger(__name__)


def prepare(spec: GroupSpec, preload: tuple[str, ...] = ()) -> None:
    """Start hosts for ``spec`` now (one-node Ray; CPU), so they import ``preload`` while the driver does
    other work; :func:`run_on_group` then borrows them."""
    if not spec.use_gpu:
        prewarm(spec.num_workers, dict(spec.env), preload)


def run_on_group(spec: GroupSpec, fn: Callable[[Any], Any], config: Any, *, max_failures: int = 0,
                 preload: tuple[str, ...] = (), what: str = "worker group") -> list[Any]:
    """Run ``fn(config)`` on every rank of a group with layout ``spec``; returns each rank's result.

    A failure kills the group's hosts; up to ``max_failures`` times a new group runs ``fn`` again.

    Raises:
        WorkerGroupError: more than ``max_failures`` failures (chained to the root cause's exception).
    """
    failures = 0
    while True:
        pg, hosts, contexts, master, devices = _start(spec, preload)
        try:
            error, results = _run_once(hosts, contexts, master, devices, spec.use_gpu, fn, config)
            if error is None:
                give_back(hosts)
                return results
            kill_hosts(hosts)
        finally:
            _remove(pg)
        failures += 1
        rank, exc = error
        ctx = contexts[rank]
        where = f"rank {rank} of {ctx.world_size} (node {ctx.node_id[:12]})"
        if failures > max_failures:
            raise WorkerGroupError(f"{what} failed {failures} time(s) (max_failures={max_failures}); "
                                   f"{where}: {describe(exc)}") from exc
        log.warning("%s: %s failed (%s); restarting the group (%d/%d)", what, where, describe(exc), failures,
                    max_failures)


def _remove(pg: Any) -> None:
    from ray.util.placement_group import remove_placement_group

    try:
        remove_placement_group(pg)
    except Exception:  # noqa: BLE001 - gone with its node or the session
        pass


def _start(spec: GroupSpec, preload: tuple[str, ...], attempts: int = 5) -> tuple:
    """Reserve, borrow and wire a group; a start that loses a host (its node died after the placement was
    granted, before Ray noticed) is retried: such retries wait for capacity and do not count as failures."""
    import ray
    from ray.util.placement_group import placement_group

    bundle = {"CPU": float(spec.cpus_per_worker), **({"GPU": 1.0} if spec.use_gpu else {})}
    bundles = [dict(bundle) for _ in range(spec.num_workers)]
    for attempt in range(1, attempts + 1):
        pg = _reserve(bundles, spec.placement.upper())
        hosts: list[Host] = []
        try:
            _wait(pg, spec)
            hosts = borrow(pg, bundles, range(spec.num_workers), dict(spec.env), preload)
            return (pg, *_wire(hosts), )
        except ray.exceptions.RayActorError as exc:
            kill_hosts(hosts)
            _remove(pg)
            if attempt == attempts:
                raise WorkerGroupError(f"could not start the worker group ({attempts} tries): {describe(exc)}") from exc
            log.warning("worker group: a worker was lost while starting (%s); starting a new group", describe(exc))
            time.sleep(min(30.0, 2.0 * attempt))
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


def _wait(pg: Any, spec: GroupSpec, every_s: float = 30.0) -> None:
    import ray

    t0 = time.time()
    while not pg.wait(timeout_seconds=every_s):
        log.warning("worker group: still waiting for %d x %s (placement %s) after %.0f s; the cluster has %s free",
                    spec.num_workers, {"CPU": spec.cpus_per_worker, "GPU": int(spec.use_gpu)}, spec.placement,
                    time.time() - t0, ray.available_resources())


def _wire(hosts: list[Host]) -> tuple[list[Host], list[RankContext], str, list[Optional[str]]]:
    """Number the ranks node by node (a node holds consecutive ranks, so a model-parallel group stays inside
    a node when a node holds a multiple of it) and pick the master (loopback unless ranks span nodes).

    Rank 0 goes on the driver's node whenever a bundle was granted there: rank 0 writes the job's output
    directory (step records the driver follows, eval.json, placement.json, the export the driver registers),
    and on a multi-node cluster without a shared workspace only the driver's node has that directory."""
    import ray

    infos = ray.get([h.actor.info.remote() for h in hosts])
    for h, info in zip(hosts, infos):
        h.pid, h.ip = info["pid"], info["ip"]
    node_order = list(dict.fromkeys(h.node_id for h in hosts))  # the first bundle's node first
    driver = driver_node()
    if driver in node_order:
        node_order.remove(driver)
        node_order.insert(0, driver)
    elif driver is not None:
        log.warning("worker group: no rank runs on the driver's node %s; rank 0 (node %s) writes the output "
                    "directory on its own disk (use a shared workspace)", driver[:12], node_order[0][:12])
    hosts = sorted(hosts, key=lambda h: node_order.index(h.node_id))  # stable: bundle order inside a node
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
    rank = lost[0] if lost else min(errors)
    return (rank, errors[rank]), []


def describe(exc: BaseException) -> str:
    """One readable line: a rank's own exception (unwrapped from Ray's task error) or how it was lost."""
    import ray

    if isinstance(exc, ray.exceptions.RayActorError):
        return "the worker process died (killed, out of memory, or its node was lost)"
    if isinstance(exc, ray.exceptions.RayTaskError) and getattr(exc, "cause", None) is not None:
        exc = exc.cause
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:500]

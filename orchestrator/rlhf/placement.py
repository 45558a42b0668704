"""Ray placement of the RL roles: one placement group reserves their resources; each rank of a role is a role
object in a warm host (:mod:`orchestrator.runtime.worker_group`) on its bundle's node.

``<kind>.colocate=true`` (default) reserves one bundle holding every role's resources (STRICT_PACK:
all roles on one node, sharing its devices through fractional CPUs/GPUs). ``false`` gives every
actor its own bundle (PACK: Ray may spread roles over nodes when one does not fit).
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

ROLES = ("actor", "critic", "reference", "reward")
"""PPO's roles; the critic-free kinds start a subset (``roles`` arguments below)."""


def _bundle(role_cfg: Any) -> dict[str, float]:
    b = {"CPU": float(role_cfg.num_cpus)}
    if role_cfg.num_gpus:
        b["GPU"] = float(role_cfg.num_gpus)
    return b


def bundles_for(ppo: Any, roles: Sequence[str] = ROLES) -> tuple[list[dict[str, float]], dict[str, list[int]]]:
    """Placement-group bundles and, per role of ``roles`` (each a ``RoleConfig`` attribute of the options
    ``ppo``), the bundle index of each of its actors."""
    if ppo.colocate:
        total: dict[str, float] = {}
        for role in roles:
            rc = getattr(ppo, role)
            for k, v in _bundle(rc).items():
                total[k] = total.get(k, 0.0) + v * rc.num_workers
        return [total], {role: [0] * getattr(ppo, role).num_workers for role in roles}
    bundles: list[dict[str, float]] = []
    index: dict[str, list[int]] = {}
    for role in roles:
        rc = getattr(ppo, role)
        index[role] = []
        for _ in range(rc.num_workers):
            index[role].append(len(bundles))
            bundles.append(_bundle(rc))
    return bundles, index


class HostedRole:
    """A role object living in a warm host (:mod:`orchestrator.runtime.worker_group`) under the role's name,
    called like an actor: ``role.rollout.remote(...)`` runs ``rollout`` on the hosted object."""

    def __init__(self, host: Any, name: str = "role") -> None:
        self.host, self.name = host, name

    def __getattr__(self, method: str) -> Any:
        actor, name = self.__dict__["host"].actor, self.__dict__["name"]

        class _Method:
            @staticmethod
            def remote(*args: Any, **kwargs: Any) -> Any:
                return actor.invoke.remote(method, args, kwargs, name)

        return _Method


ROLE_PRELOAD = ("torch", "transformers", "transformers.models.llama.modeling_llama", "deepspeed",
                "orchestrator.rlhf.roles")
"""What a new role host imports as soon as it starts."""


class RoleGroup:
    """The ranks of one role (``num_workers``), each a role object in a warm host placed on its bundle's node;
    ``call`` runs a method on every rank.

    ``share_hosts`` (another role's hosts, see :func:`shares_processes`): rank ``r`` of this role lives in
    ``share_hosts[r % len(share_hosts)]`` beside that role's object instead of in a process of its own. Only
    for roles that join no process group (frozen roles: reference, reward), so the host's group stays the
    trained role's. The owning role's group gives the hosts back or kills them; a sharing group never does.
    """

    def __init__(self, name: str, cls: type, role_cfg: Any, pg: Any, bundle_indices: Sequence[int],
                 make_args: Callable[[int, int, str], tuple[tuple, dict]], env: dict[str, str],
                 share_hosts: Optional[Sequence[Any]] = None) -> None:
        import ray

        from orchestrator.runtime.worker_group import borrow, identify

        self.name = name
        n = role_cfg.num_workers
        shape = _bundle(role_cfg)
        self.owns_hosts = not share_hosts
        if share_hosts:
            self.hosts = [share_hosts[r % len(share_hosts)] for r in range(n)]
        else:
            self.hosts = borrow(pg, [shape] * (max(bundle_indices) + 1), bundle_indices, env, ROLE_PRELOAD)
        # rank 0's host:port for the role's process group (a single rank needs no lookup: it is its own store)
        if n == 1:
            master = "127.0.0.1:0"
        else:
            identify(self.hosts)
            addr = "127.0.0.1" if len({h.node_id for h in self.hosts}) == 1 else self.hosts[0].ip
            master = f"{addr}:{ray.get(self.hosts[0].actor.free_port.remote())}"
        self.pending = []
        for rank, host in enumerate(self.hosts):
            args, kwargs = make_args(rank, n, master)
            self.pending.append(host.actor.construct.remote(cls, args, kwargs, host.devices, f"{name}/{rank}"))
        # objects named role/rank: a host may hold two ranks of a frozen role that has more ranks than the actor
        self.workers = [HostedRole(h, f"{name}/{rank}") for rank, h in enumerate(self.hosts)]

    def ready(self) -> list:
        """Futures that resolve once every rank's role object is constructed (wait on all roles' at once, so
        the roles start in parallel)."""
        return list(self.pending)

    def __len__(self) -> int:
        return len(self.workers)

    def call(self, method: str, *args: Any, **kwargs: Any) -> list:
        """Futures of ``method(*args)`` on every rank."""
        return [getattr(w, method).remote(*args, **kwargs) for w in self.workers]

    def call_sharded(self, method: str, shards: Sequence[Any], *args: Any, **kwargs: Any) -> list:
        """Futures of ``method(shard_i, *args)`` on rank ``i``."""
        return [getattr(w, method).remote(s, *args, **kwargs) for w, s in zip(self.workers, shards)]

    def kill(self) -> None:
        """End the role's hosts (after a failure: a host may be dead or stuck in a collective)."""
        from orchestrator.runtime.worker_group import kill_hosts

        if self.owns_hosts:
            kill_hosts(self.hosts)

    def give_back(self, timeout_s: float = 60.0) -> bool:
        """The role's hosts go back to the warm pool (the job is over and the role healthy, or the roles restart
        and every rank of this one still answers within ``timeout_s``); else they are killed. Returns whether
        they went back."""
        from orchestrator.runtime.worker_group import give_back

        return give_back(self.hosts, timeout_s) if self.owns_hosts else False


def shares_processes(opts: Any, role: str, trained: Sequence[str]) -> bool:
    """Whether ``role`` runs inside the actor's processes (``<kind>.share_processes``): only when the roles are
    colocated (one bundle, one node) and ``role`` is frozen (joins no process group)."""
    return bool(opts.colocate and getattr(opts, "share_processes", False) and role != "actor"
                and role not in trained)


def check_placement(colocate: bool, placement: str, kind: str) -> None:
    """Refuse ``cluster.placement=spread`` with colocated roles (one STRICT_PACK bundle on one node)."""
    from orchestrator.config.errors import ConfigError

    if colocate and placement == "spread":
        raise ConfigError("cluster.placement", f"spread cannot apply while {kind}.colocate=true keeps every role on "
                          "one node", f"set {kind}.colocate=false to spread the roles, or cluster.placement=pack")


def check_storage(storage_path: str | None, kind: str) -> None:
    """Refuse an object-store ``cluster.storage_path`` for the RL kinds: their roles save and load checkpoints
    through a filesystem path (upload/download from a URI is implemented for the training kinds only)."""
    from orchestrator.config.errors import ConfigError

    if storage_path and "://" in storage_path:
        raise ConfigError("cluster.storage_path", f"{kind} roles write checkpoints through a filesystem path, not "
                          f"the URI {storage_path!r}", "use a path every node mounts (NFS, a FUSE-mounted bucket)")


def pg_strategy(colocate: bool, placement: str) -> str:
    """Ray strategy of the roles' placement group: ``STRICT_PACK`` (one node) when colocated, else
    ``cluster.placement`` (``PACK`` / ``SPREAD``)."""
    return "STRICT_PACK" if colocate else placement.upper()


def create_placement_group(ppo: Any, roles: Sequence[str] = ROLES,
                           placement: str = "pack") -> tuple[Any, dict[str, list[int]]]:
    """Reserve the roles' resources (waits until Ray can grant them)."""
    import ray
    from ray.util.placement_group import placement_group

    bundles, index = bundles_for(ppo, roles)
    pg = placement_group(bundles, strategy=pg_strategy(ppo.colocate, placement))
    ray.get(pg.ready(), timeout=300)
    return pg, index


def prewarm_role_hosts(opts: Any, roles: Sequence[str], trained: Sequence[str], cluster: Any,
                       env: dict[str, str]) -> None:
    """Start the processes the roles will need now (one-node CPU Ray), so they import the stack while the driver
    reads and tokenizes the prompts and opens the MLflow run; the roles then borrow them (same ``env``)."""
    if cluster.use_gpu:
        return  # GPU hosts are matched to their bundle's devices, known once the placement group is granted
    from orchestrator.runtime.worker_group import prewarm

    count = sum(getattr(opts, r).num_workers for r in roles if not shares_processes(opts, r, trained))
    prewarm(count, env, ROLE_PRELOAD)

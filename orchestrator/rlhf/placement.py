"""Ray placement of the RL roles: one placement group, role actors pinned to its bundles.

``<kind>.colocate=true`` (default) reserves one bundle holding every role's resources (STRICT_PACK:
all roles on one node, sharing its devices through fractional CPUs/GPUs). ``false`` gives every
actor its own bundle (PACK: Ray may spread roles over nodes when one does not fit).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

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


def _node_address() -> str:
    import ray

    from orchestrator.core.dist import free_port

    return f"{ray.util.get_node_ip_address()}:{free_port()}"


class RoleGroup:
    """The Ray actors of one role (``num_workers`` ranks); ``call`` runs a method on every rank."""

    def __init__(self, name: str, cls: type, role_cfg: Any, pg: Any, bundle_indices: Sequence[int],
                 make_args: Callable[[int, int, str], tuple[tuple, dict]], env: dict[str, str]) -> None:
        import ray
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        self.name = name
        n = role_cfg.num_workers

        def strategy(i: int) -> Any:
            return PlacementGroupSchedulingStrategy(placement_group=pg, placement_group_bundle_index=bundle_indices[i])

        # rank 0's host:port for the role's process group (a single rank needs no lookup: it is its own store)
        master = "127.0.0.1:0" if n == 1 else ray.get(
            ray.remote(num_cpus=0)(_node_address).options(scheduling_strategy=strategy(0)).remote())
        remote_cls = ray.remote(cls)
        self.workers = []
        for rank in range(n):
            args, kwargs = make_args(rank, n, master)
            self.workers.append(remote_cls.options(
                num_cpus=role_cfg.num_cpus, num_gpus=role_cfg.num_gpus, scheduling_strategy=strategy(rank),
                runtime_env={"env_vars": env}, name=None, max_restarts=0,
            ).remote(*args, **kwargs))

    def ready(self) -> list:
        """Futures that resolve once every rank's actor is constructed (wait on all roles' at once, so the
        roles start in parallel)."""
        return [w.ping.remote() for w in self.workers]

    def __len__(self) -> int:
        return len(self.workers)

    def call(self, method: str, *args: Any, **kwargs: Any) -> list:
        """Futures of ``method(*args)`` on every rank."""
        return [getattr(w, method).remote(*args, **kwargs) for w in self.workers]

    def call_sharded(self, method: str, shards: Sequence[Any], *args: Any, **kwargs: Any) -> list:
        """Futures of ``method(shard_i, *args)`` on rank ``i``."""
        return [getattr(w, method).remote(s, *args, **kwargs) for w, s in zip(self.workers, shards)]

    def kill(self) -> None:
        import ray

        for w in self.workers:
            try:
                ray.kill(w, no_restart=True)
            except Exception:  # already dead
                pass


def check_placement(colocate: bool, placement: str, kind: str) -> None:
    """Refuse ``cluster.placement=spread`` with colocated roles (one STRICT_PACK bundle on one node)."""
    from orchestrator.config.errors import ConfigError

    if colocate and placement == "spread":
        raise ConfigError("cluster.placement", f"spread cannot apply while {kind}.colocate=true keeps every role on "
                          "one node", f"set {kind}.colocate=false to spread the roles, or cluster.placement=pack")


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

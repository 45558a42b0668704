"""Ray placement of the PPO roles: one placement group, role actors pinned to its bundles.

``ppo.colocate=true`` (default) reserves one bundle holding every role's resources (STRICT_PACK:
all roles on one node, sharing its devices through fractional CPUs/GPUs). ``false`` gives every
actor its own bundle (PACK: Ray may spread roles over nodes when one does not fit).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

ROLES = ("actor", "critic", "reference", "reward")


def _bundle(role_cfg: Any) -> dict[str, float]:
    b = {"CPU": float(role_cfg.num_cpus)}
    if role_cfg.num_gpus:
        b["GPU"] = float(role_cfg.num_gpus)
    return b


def bundles_for(ppo: Any) -> tuple[list[dict[str, float]], dict[str, list[int]]]:
    """Placement-group bundles and, per role, the bundle index of each of its actors."""
    if ppo.colocate:
        total: dict[str, float] = {}
        for role in ROLES:
            rc = getattr(ppo, role)
            for k, v in _bundle(rc).items():
                total[k] = total.get(k, 0.0) + v * rc.num_workers
        return [total], {role: [0] * getattr(ppo, role).num_workers for role in ROLES}
    bundles: list[dict[str, float]] = []
    index: dict[str, list[int]] = {}
    for role in ROLES:
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
        ray.get([w.ping.remote() for w in self.workers])

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


def pg_strategy(colocate: bool, placement: str) -> str:
    """Ray strategy of the roles' placement group: ``STRICT_PACK`` (one node) when colocated, else
    ``cluster.placement`` (``PACK`` / ``SPREAD``)."""
    return "STRICT_PACK" if colocate else placement.upper()


def create_placement_group(ppo: Any, placement: str = "pack") -> tuple[Any, dict[str, list[int]]]:
    """Reserve the roles' resources (waits until Ray can grant them)."""
    import ray
    from ray.util.placement_group import placement_group

    bundles, index = bundles_for(ppo)
    pg = placement_group(bundles, strategy=pg_strategy(ppo.colocate, placement))
    ray.get(pg.ready(), timeout=300)
    return pg, index

"""The worker group's bundles and rank numbering (pure parts of :mod:`orchestrator.runtime.rank_group`): a
TP/PP group is one bundle, so one node, and its ranks are consecutive and aligned wherever Ray puts it."""

from __future__ import annotations

import pytest

from orchestrator.config.plan import model_parallel_groups
from orchestrator.runtime.rank_group import group_bundles, rank_order
from orchestrator.runtime.worker_group import GroupSpec, share_bundles


def test_one_bundle_per_model_parallel_group_with_all_its_resources():
    bundles, indices = group_bundles(GroupSpec(num_workers=8, cpus_per_worker=3, use_gpu=True, model_parallel=4), 8)
    assert bundles == [{"CPU": 12.0, "GPU": 4.0}] * 2
    assert indices == [0, 0, 0, 0, 1, 1, 1, 1]
    assert group_bundles(GroupSpec(num_workers=3), 3) == ([{"CPU": 1.0}] * 3, [0, 1, 2])  # no TP/PP: one per rank
    assert group_bundles(GroupSpec(num_workers=6, model_parallel=2), 4)[1] == [0, 0, 1, 1]  # a smaller world


@pytest.mark.parametrize("bundle_nodes,driver", [
    (["w", "h", "w"], "h"),            # the driver's node holds the middle bundle
    (["a", "b", "a", "c"], "x"),       # the driver holds no rank
    (["h", "h", "w", "w", "h"], "w"),  # two groups on the worker, three on the head
])
def test_ranks_go_node_by_node_and_every_group_stays_whole_and_aligned(bundle_nodes, driver):
    mp = 2
    hosts = [(node, b) for b, node in enumerate(bundle_nodes) for _ in range(mp)]  # borrow's order: bundle by bundle
    order, nodes = rank_order([n for n, _ in hosts], driver)
    ranked = [hosts[i] for i in order]
    assert sorted(order) == list(range(len(hosts)))
    if driver in bundle_nodes:
        assert ranked[0][0] == driver and nodes[0] == driver  # rank 0 on the driver's node
    assert [n for n, _ in ranked] == sorted((n for n, _ in ranked), key=nodes.index)  # node by node
    for group in model_parallel_groups(len(hosts), mp):  # DeepSpeed's groups: consecutive ranks
        assert len({ranked[r] for r in group}) == 1  # ... are exactly the hosts of one bundle


def test_hosts_sharing_a_bundle_split_its_gpus():
    where = {0: ("n1", "4,5"), 1: ("n2", "0,1"), 2: ("n3", None)}
    assert share_bundles([0, 0, 1, 1, 2], where) == [("n1", "4"), ("n1", "5"), ("n2", "0"), ("n2", "1"), ("n3", None)]
    assert share_bundles([0], {0: ("n1", "2,3")}) == [("n1", "2,3")]  # a role's bundle: all its GPUs


class _FakePG:
    def __init__(self, world: int, fits: int) -> None:
        self.world, self.fits, self.waits = world, fits, []

    def wait(self, timeout_seconds: float) -> bool:
        self.waits.append(timeout_seconds)
        return self.world <= self.fits


def test_a_restart_tries_the_full_group_then_smaller_sizes_and_keeps_the_first_that_fits(monkeypatch):
    """Elastic restarts (``cluster.min_workers``): the full size waits ``wait_s``, each smaller size briefly; the
    first granted wins and the refused reservations are removed."""
    import ray

    from orchestrator.runtime import rank_group

    made, removed = [], []

    def reserve(bundles, strategy):
        made.append(_FakePG(sum(int(b["CPU"]) for b in bundles), fits=4))
        return made[-1]

    monkeypatch.setattr(rank_group, "_reserve", reserve)
    monkeypatch.setattr(rank_group, "_remove", removed.append)
    monkeypatch.setattr(ray, "available_resources", lambda: {"CPU": 4.0})
    spec = GroupSpec(num_workers=8, model_parallel=2)
    pg, world = rank_group._reserve_sized(spec, (8, 6, 4, 2), wait_s=12.0)
    assert world == 4 and pg is made[-1]
    assert [p.world for p in made] == [8, 6, 4] and removed == made[:2]
    assert [p.waits for p in made] == [[12.0], [rank_group.SMALLER_TRY_S], [rank_group.SMALLER_TRY_S]]
    made.clear()
    monkeypatch.setattr(rank_group, "_reserve", lambda bundles, strategy: made.append(_FakePG(len(bundles) * 2, 2))
                        or made[-1])
    assert rank_group._reserve_sized(spec, (8, 2), wait_s=0.0)[1] == 2  # the smallest size: waited for (30 s
    assert [p.waits for p in made] == [[0.0], [30.0]]                    # at a time, with a warning)

"""``cluster.placement`` and ``cluster.storage_path``: validation, the dry-run plan, where checkpoints go."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.config import ConfigError
from orchestrator.config.jobs import checkpoint_root, checkpoint_uri
from orchestrator.kinds import load
from orchestrator.kinds import plan as make_plan


def test_placement_is_validated_by_name():
    with pytest.raises(ConfigError, match="cluster.placement"):
        load("pretrain", ["cluster.placement=ring"])


@pytest.mark.parametrize("strategy,together,last", [
    ("pack", [[0, 1, 2, 3]], "ranks 0-3: as few nodes as hold them, the driver's node first"),
    ("spread", [[0, 1], [2, 3]], "each tp group: a node of its own while there are free nodes")])
def test_dry_run_plan_shows_which_ranks_land_together(strategy, together, last):
    """TP groups are placed whole (a bundle each), whatever the strategy spreads or packs."""
    plan = make_plan(load("pretrain", ["parallel=tp2", "cluster.num_workers=4", f"cluster.placement={strategy}",
                                       "cluster.cpus_per_worker=3"]))
    placement = plan["placement"]
    assert placement["ray_strategy"] == strategy.upper()
    assert placement["ranks_together"] == together
    assert placement["model_parallel_groups"] == [[0, 1], [2, 3]]
    assert placement["bundles"] == {"count": 2, "ranks_each": 2, "resources_each": {"CPU": 6}}
    assert placement["lands_together"] == ["ranks 0-1: one node (tp group 0)", "ranks 2-3: one node (tp group 1)", last]


def test_dry_run_plan_without_model_parallelism_has_a_bundle_per_rank():
    plan = make_plan(load("pretrain", ["cluster.num_workers=3", "cluster.placement=spread", "cluster.use_gpu=true",
                                       "trainer.global_batch_size=6"]))
    assert plan["placement"]["ranks_together"] == [[0], [1], [2]]
    assert plan["placement"]["bundles"] == {"count": 3, "ranks_each": 1, "resources_each": {"CPU": 1, "GPU": 1}}
    assert plan["placement"]["lands_together"] == ["ranks 0, 1, 2: a node of its own while there are free nodes"]
    pp = make_plan(load("pretrain", ["parallel=pp2", "cluster.num_workers=4"]))["placement"]
    assert pp["lands_together"][:2] == ["ranks 0-1: one node (pp group 0)", "ranks 2-3: one node (pp group 1)"]


@pytest.mark.parametrize("overrides,sizes", [
    ([], []),  # no cluster.min_workers: no shrink
    (["cluster.min_workers=1"], [3, 2, 1]),
    (["cluster.min_workers=2"], [3, 2]),
    (["cluster.min_workers=1", "trainer.global_batch_size=4"], [2, 1]),  # 3 ranks cannot split 4 blocks
    (["cluster.min_workers=2", "parallel.pipeline_parallel=2", "parallel.precision=fp32"], [2]),  # whole pp groups
])
def test_elastic_world_sizes_keep_whole_groups_and_the_global_batch(overrides, sizes):
    workers = "cluster.num_workers=4"
    plan = make_plan(load("pretrain", [workers, "trainer.global_batch_size=12", *overrides]))
    assert plan["elastic_world_sizes"] == sizes


@pytest.mark.parametrize("overrides,problem", [
    (["cluster.min_workers=5"], "not between 1 and cluster.num_workers=4"),
    (["cluster.min_workers=0"], "not between 1"),
    (["cluster.min_workers=1", "trainer.max_failures=0"], "trainer.max_failures=0 allows none"),
    (["cluster.min_workers=2", "parallel=zero2"], "parallel.zero_stage=2 checkpoints hold per-rank"),
    (["cluster.min_workers=2", "parallel.pipeline_parallel=2", "parallel.precision=bf16"], "BF16_Optimizer"),
    (["cluster.min_workers=1", "parallel.pipeline_parallel=2", "parallel.precision=fp32"], "not a multiple of"),
    (["cluster.min_workers=3", "trainer.global_batch_size=8"], "no world size from 3 to 3 splits"),
    (["cluster.elastic_wait_s=-1"], "cluster.elastic_wait_s"),
])
def test_elastic_is_refused_where_a_checkpoint_cannot_change_its_world_size(overrides, problem):
    with pytest.raises(ConfigError, match="cluster.min_workers|cluster.elastic_wait_s") as info:
        load("pretrain", ["cluster.num_workers=4", *overrides])
    assert problem in str(info.value)


@pytest.mark.parametrize("kind", ["ppo", "grpo"])
def test_rl_kinds_refuse_elastic_workers(kind):
    with pytest.raises(ConfigError, match="cluster.min_workers: .* restarts its roles"):
        load(kind, ["cluster.min_workers=1"])


@pytest.mark.parametrize("kind", ["ppo", "grpo"])
def test_rl_roles_spread_only_when_not_colocated(kind):
    assert make_plan(load(kind, ["cluster.placement=spread", f"{kind}.colocate=false"]))["placement_strategy"] == "SPREAD"
    with pytest.raises(ConfigError, match="cluster.placement"):
        load(kind, ["cluster.placement=spread"])  # colocate=true keeps every role on one node


def test_storage_path_holds_the_checkpoint_root(tmp_path):
    cfg = load("pretrain", [f"workspace={tmp_path}/local", f"cluster.storage_path={tmp_path}/nfs", "run_name=r1"])
    assert checkpoint_root(cfg) == Path(tmp_path) / "nfs" / "r1" / "checkpoints"
    assert checkpoint_root(load("pretrain", [f"workspace={tmp_path}", "run_name=r1"])) == tmp_path / "r1" / "checkpoints"


def test_object_store_uri_keeps_a_local_mirror_and_names_the_store(tmp_path):
    cfg = load("pretrain", [f"workspace={tmp_path}", "run_name=r1", "cluster.storage_path=s3://bucket/ckpt/"])
    assert checkpoint_uri(cfg) == "s3://bucket/ckpt/r1/checkpoints"
    assert checkpoint_root(cfg) == tmp_path / "r1" / "checkpoints"  # each node's local mirror
    assert make_plan(cfg)["checkpoints"] == "s3://bucket/ckpt/r1/checkpoints"
    assert checkpoint_uri(load("pretrain", [f"cluster.storage_path={tmp_path}/nfs"])) is None


def test_uri_storage_mirrors_checkpoints_on_the_nodes_own_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("ORCHESTRATOR_LOCAL_DIR", str(tmp_path / "scratch"))
    cfg = load("pretrain", [f"workspace={tmp_path}", "run_name=r1", "cluster.storage_path=s3://bucket/ckpt"])
    other = load("pretrain", [f"workspace={tmp_path}", "run_name=r1", "cluster.storage_path=s3://bucket/other"])
    root = checkpoint_root(cfg)
    assert root.parent == tmp_path / "scratch" / "checkpoints" and root.name.startswith("r1-")
    assert checkpoint_root(other) != root  # the same run name on another store: its own mirror


def test_storage_uri_without_a_pyarrow_filesystem_is_refused_with_the_fix():
    with pytest.raises(ConfigError, match=r"cluster.storage_path.*ftp.*s3://"):
        load("pretrain", ["cluster.storage_path=ftp://host/ckpt"])


@pytest.mark.parametrize("kind", ["ppo", "grpo"])
def test_rl_kinds_refuse_an_object_store_uri(kind):
    with pytest.raises(ConfigError, match="cluster.storage_path.*mounts"):
        load(kind, ["cluster.storage_path=s3://bucket/ckpt"])

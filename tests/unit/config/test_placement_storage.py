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


@pytest.mark.parametrize("strategy,together", [("pack", [[0, 1, 2, 3]]), ("spread", [[0], [1], [2], [3]])])
def test_dry_run_plan_shows_which_ranks_land_together(strategy, together):
    plan = make_plan(load("pretrain", ["cluster.num_workers=4", f"cluster.placement={strategy}",
                                       "parallel.tensor_parallel=2", "parallel=zero1"]))
    assert plan["placement"]["ray_strategy"] == strategy.upper()
    assert plan["placement"]["ranks_together"] == together
    assert plan["placement"]["model_parallel_groups"] == [[0, 1], [2, 3]]


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

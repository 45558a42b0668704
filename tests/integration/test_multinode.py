"""Two real Ray nodes on one machine (``two_node_cluster``): placement, checkpoints on ``cluster.storage_path``
with node-local output directories, and the loss of a node in the middle of a run.

Jobs run as a user runs them against a cluster: ``orchestrator run pretrain cluster.address=<head GCS>`` in a
subprocess on the head's machine. Each job's workspace is the head's scratch directory (node-local); the
checkpoints go to ``<root>/shared`` (``cluster.storage_path``, standing for NFS). Jobs, in order:
* ``spread``: 10 uninterrupted steps, ``cluster.placement=spread`` (the reference for the others);
* ``packed``: ``pack``, rank 1 dies at step 5 (``max_failures=0``: the job fails after committing step 4);
  its output directory is then deleted (a node that lost its disk) and the job is rerun: it resumes from
  the storage path and the same MLflow run;
* ``node_loss``: ``spread`` with ``max_failures=1``; the worker node is SIGKILLed (raylet, agents, its
  workers) once step 2 is committed; Ray Train restarts the group on the head's remaining 2 CPUs, resumes
  from the newest committed checkpoint and finishes. The node then rejoins.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest

from tests.integration.multinode_helpers import finish

pytestmark = pytest.mark.slow

STEPS = 10
TINY = [f"trainer.max_steps={STEPS}", "trainer.save_every=2", "trainer.global_batch_size=8", "trainer.eval_batches=2",
        "optim.warmup_steps=2"]


def _job(cluster, name: str, *extra: str, export: bool = False):
    ws = cluster.head_dir / "scratch" / "ws"
    return cluster.run(f"workspace={ws}", f"run_name={name}", f"cluster.storage_path={_storage(cluster)}", *TINY,
                       f"trainer.export={str(export).lower()}", *extra), ws / name


def _storage(cluster) -> Path:
    return cluster.head_dir.parent / "shared"


def _losses(out: Path) -> dict[int, float]:
    from orchestrator.training.loop import read_steps

    return {k: s["loss"] for k, s in read_steps(str(out)).items()}


def _run_id(text: str) -> str:
    m = re.search(r"MLflow run (\w+)", text)
    assert m, text[-3000:]
    return m.group(1)


def _mlflow_steps(cluster, run_id: str, key: str = "loss") -> list[int]:
    from mlflow import MlflowClient

    return sorted(m.step for m in MlflowClient(cluster.mlflow_uri).get_metric_history(run_id, key))


@pytest.fixture(scope="module")
def spread(two_node_cluster):
    proc, out = _job(two_node_cluster, "spread", "cluster.placement=spread", export=True)
    rc, text = finish(proc)
    assert rc == 0, text[-4000:]
    return out, text


def test_two_nodes_joined_with_their_labels(two_node_cluster):
    labels = sorted(n.get("labels", {}).get("node_group", "") for n in two_node_cluster.alive_nodes())
    assert labels == ["head", "worker"]


def test_spread_puts_the_ranks_on_different_nodes(two_node_cluster, spread):
    out, _ = spread
    placement = json.loads((out / "placement.json").read_text())
    assert [p["rank"] for p in placement] == [0, 1]
    assert len({p["node_id"] for p in placement}) == 2
    # rank 0 (it writes the output directory and the export) runs on the driver's node, the head
    assert placement[0]["node_id"] == two_node_cluster.node_ids()["head"]
    assert {p["local_dir"] for p in placement} == {str(two_node_cluster.head_dir / "scratch"),
                                                   str(two_node_cluster.worker_dir / "scratch")}


def test_checkpoints_live_on_the_storage_path_not_the_output_dir(two_node_cluster, spread):
    out, _ = spread
    root = _storage(two_node_cluster) / "spread" / "checkpoints"
    assert (root / "latest").read_text().strip() == f"step_{STEPS:08d}"
    assert (root / f"step_{STEPS:08d}" / "COMMITTED").is_file()
    assert not (out / "checkpoints").exists()


def test_export_reaches_the_tracking_server(two_node_cluster, spread):
    """The export is uploaded to the MLflow server (proxied artifacts, stored under the head's
    ``mlartifacts``) and registered from there, not left on a worker's disk."""
    from mlflow import MlflowClient

    out, text = spread
    run_id = _run_id(text)
    client = MlflowClient(two_node_cluster.mlflow_uri)
    files = {Path(a.path).name for a in client.list_artifacts(run_id, "model")}
    assert {"config.json", "model.safetensors"} <= files, files
    version = client.get_model_version("spread", "1")
    assert version.run_id == run_id
    stored = list((two_node_cluster.head_dir / "mlartifacts").rglob("model.safetensors"))
    assert stored and stored[0].stat().st_size == (out / "export" / "model.safetensors").stat().st_size


def test_pack_then_resume_from_storage_after_the_output_dir_is_lost(two_node_cluster, spread):
    ref = _losses(spread[0])
    proc, out = _job(two_node_cluster, "packed", "trainer.fail_at_step=5", "trainer.max_failures=0")
    rc, text = finish(proc)
    assert rc != 0, text[-3000:]
    placement = json.loads((out / "placement.json").read_text())
    assert len({p["node_id"] for p in placement}) == 1  # pack: both ranks on one node
    root = _storage(two_node_cluster) / "packed" / "checkpoints"
    assert (root / "latest").read_text().strip() == "step_00000004"
    first_run = json.loads((out / "tracking.json").read_text())["run_id"]
    shutil.rmtree(out)  # the node-local output directory is gone; only the storage path remains

    proc, out = _job(two_node_cluster, "packed")
    rc, text = finish(proc)
    assert rc == 0, text[-4000:]
    resumed = _losses(out)
    assert sorted(resumed) == list(range(5, STEPS + 1))  # steps 1-4 came from the checkpoint, not recomputed
    assert resumed == {k: ref[k] for k in resumed}
    assert _run_id(text) == first_run  # the run id came back from the checkpoint
    assert _mlflow_steps(two_node_cluster, first_run) == list(range(1, STEPS + 1))


def test_node_loss_mid_run_recovers_on_the_remaining_node(two_node_cluster, spread):
    cluster = two_node_cluster
    ref = _losses(spread[0])
    proc, out = _job(cluster, "node_loss", "cluster.placement=spread", "trainer.max_failures=1")
    root = _storage(cluster) / "node_loss" / "checkpoints"
    deadline = time.time() + 400
    while not (root / "step_00000002" / "COMMITTED").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    placement = json.loads((out / "placement.json").read_text())
    cluster.kill_worker_node()
    killed_at = max(_losses(out))
    try:
        rc, text = finish(proc)
    finally:
        join = cluster.join_worker()
    assert rc == 0, text[-4000:]
    assert join.returncode == 0, join.stdout + join.stderr
    assert len({p["node_id"] for p in placement}) == 2  # the first attempt used both nodes
    after = json.loads((out / "placement.json").read_text())
    assert len({p["node_id"] for p in after}) == 1 and after != placement  # the restart: the head alone
    assert killed_at < STEPS, "the node was killed after the run had finished"
    assert _losses(out) == ref  # every step, recomputed ones included, equals the uninterrupted run's
    assert _mlflow_steps(cluster, _run_id(text)) == list(range(1, STEPS + 1))


GRPO = ["trainer.max_steps=4", "trainer.save_every=1", "trainer.lr=2e-3", "grpo.rollout_batch_size=4",
        "grpo.group_size=4", "grpo.minibatch_size=16", "parallel.micro_batch_size=16", "grpo.num_eval_prompts=0",
        "grpo.colocate=false", "cluster.placement=spread", "trainer.export=false"]


def _grpo(cluster, name: str, policy: Path, *extra: str):
    ws = cluster.head_dir / "scratch" / "ws"
    return cluster.run(f"workspace={ws}", f"run_name={name}", f"cluster.storage_path={_storage(cluster)}",
                       f"model.pretrained={policy}", *GRPO, *extra, kind="grpo"), ws / name


def test_grpo_role_on_the_lost_node_recovers_with_the_same_steps(two_node_cluster, spread):
    """GRPO with its roles spread over both nodes (the pretrain export as the policy: any model will do);
    the worker node dies once step 1 is committed; the controller restarts the roles on the head, reloads
    step 1 and finishes with the per-step metrics of an uninterrupted run, each MLflow step once."""
    cluster = two_node_cluster
    cluster.wait_for_nodes(2)  # the node-loss test rejoined the worker
    policy = spread[0] / "export"
    proc, ref_out = _grpo(cluster, "grpo_ref", policy)
    rc, text = finish(proc)
    assert rc == 0, text[-4000:]
    ref = _steps(ref_out)

    proc, out = _grpo(cluster, "grpo_node_loss", policy, "trainer.max_failures=1")
    root = _storage(cluster) / "grpo_node_loss" / "checkpoints"
    deadline = time.time() + 300
    while not (root / "step_00000001" / "COMMITTED").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    before = json.loads((out / "placement.json").read_text())
    worker = cluster.node_ids()["worker"]
    cluster.kill_worker_node()
    killed_at = max(_steps(out))
    try:
        rc, text = finish(proc)
    finally:
        join = cluster.join_worker()
    assert rc == 0, text[-4000:]
    assert join.returncode == 0, join.stdout + join.stderr
    assert worker in {p["node_id"] for p in before}, before  # a role ran on the node that was lost
    after = json.loads((out / "placement.json").read_text())
    assert worker not in {p["node_id"] for p in after}, after  # the restarted roles: the head alone
    assert killed_at < 4, "the node was killed after the run had finished"
    got = _steps(out)
    assert sorted(got) == [1, 2, 3, 4]
    for step in got:
        for key in ("reward_mean", "kl", "policy_loss", "entropy"):
            assert got[step][key] == ref[step][key], (step, key)
    run_id = json.loads((out / "tracking.json").read_text())["run_id"]
    assert _mlflow_steps(cluster, run_id, "reward_mean") == [1, 2, 3, 4]


def _steps(out: Path) -> dict[int, dict[str, float]]:
    from orchestrator.training.loop import read_steps

    return read_steps(str(out))

"""Two real Ray nodes on one machine (``two_node_cluster``): placement, checkpoints on ``cluster.storage_path``
(a path standing for NFS, or an ``s3://`` URI on a real S3 endpoint: moto's server) with node-local output
directories, exports on the tracking server, and the loss of a node in the middle of a pretrain, a PPO and a
data_prep run.

Jobs run as a user runs them against a cluster: ``orchestrator run <kind> cluster.address=<head GCS>`` in a
subprocess on the head's machine (the driver's node). Each job's workspace is the head's scratch directory
(node-local). Jobs, in order:
* ``spread`` (module fixture): 10 uninterrupted steps, ``cluster.placement=spread``, checkpoints to
  ``s3://<bucket>/mn`` (pyarrow's S3 filesystem), an export registered on the MLflow server (the losses every
  pretrain test compares with);
* ``packed``: ``pack``, the same S3 URI, rank 1 dies at step 5 (``max_failures=0``: the job fails after
  committing step 4); its output directory is then deleted (a node that lost its disk, checkpoint mirror
  included) and the job is rerun: it resumes from S3 and the same MLflow run;
* no job: a driver (``placement_probe``) reserves, borrows and wires tp2 worker groups without training and
  reports the node each rank's process runs on: each TP group is whole on one node;
* ``node_loss``: ``spread``, checkpoints to ``<root>/shared`` (a path), ``max_failures=1``; the worker node is
  SIGKILLed (raylet, agents, its workers) once step 2 is committed; the worker group restarts on the head
  alone, resumes from the newest committed checkpoint and finishes;
* ``elastic``: the same with 2 CPUs per rank (each node holds one rank) and ``cluster.min_workers=1``: after
  the kill the head cannot hold two ranks, so the group restarts with one (twice the gradient accumulation)
  and ends with the uninterrupted run's losses up to the summation order;
* ``ppo_ref`` / ``ppo_node_loss``: PPO with its four roles spread over both nodes, checkpoints to
  ``<root>/shared``; the worker node dies once step 1 is committed; the roles restart on the head (in the
  processes of those that ran there, and one new process per lost role) and the run ends with the reference
  run's per-step metrics;
* ``dp_ref`` / ``dp_node_loss``: data_prep; the worker node dies during the dedup shuffle.
A test that needs both nodes rejoins the worker first (``ensure_worker``) when an earlier one killed it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.cluster_helpers import REPO
from tests.integration.multinode_helpers import finish

pytestmark = pytest.mark.slow

STEPS = 10
TINY = [f"trainer.max_steps={STEPS}", "trainer.save_every=2", "trainer.global_batch_size=8", "trainer.eval_batches=2",
        "optim.warmup_steps=2"]
S3_PREFIX = "mn"
"""``cluster.storage_path=s3://<bucket>/mn``: a run's checkpoints are under ``mn/<run_name>/checkpoints``."""


def _ws(cluster) -> Path:
    return cluster.head_dir / "scratch" / "ws"


def _job(cluster, name: str, *extra: str, export: bool = False, s3: bool = False):
    storage = cluster.s3.uri(S3_PREFIX) if s3 else _storage(cluster)
    return cluster.run(f"workspace={_ws(cluster)}", f"run_name={name}", f"cluster.storage_path={storage}", *TINY,
                       f"trainer.export={str(export).lower()}", *extra), _ws(cluster) / name


def _storage(cluster) -> Path:
    """A directory standing for NFS (``cluster.storage_path`` as a path)."""
    return cluster.head_dir.parent / "shared"


PPO_STEPS = 5
PPO = [f"trainer.max_steps={PPO_STEPS}", "trainer.save_every=1", "trainer.lr=2e-3", "ppo.rollout_batch_size=16",
       "ppo.minibatch_size=16", "parallel.micro_batch_size=8", "ppo.sample_every=100", "ppo.colocate=false",
       "cluster.placement=spread", "model.pretrained=null"]
"""PPO from a seeded random policy (the task's own tokenizer): any model will do for recovery, and the test then
needs no pretrain run first."""


def _ppo(cluster, name: str, *extra: str):
    return cluster.run(f"workspace={_ws(cluster)}", f"run_name={name}", f"cluster.storage_path={_storage(cluster)}",
                       *PPO, *extra, kind="ppo"), _ws(cluster) / name


DATA_PREP = ["data.demo_num_docs=300", "data.partition_kb=128", "data.shuffle_partitions=3"]


def _data_prep(cluster, name: str):
    return cluster.run(f"workspace={_ws(cluster)}", f"run_name={name}", *DATA_PREP, kind="data_prep"), _ws(cluster) / name


@pytest.fixture(scope="module")
def spread(two_node_cluster):
    """The uninterrupted ``spread`` run (S3 storage, an export): the losses every pretrain test compares with."""
    cluster = two_node_cluster
    cluster.ensure_worker()
    proc, out = _job(cluster, "spread", "cluster.placement=spread", export=True, s3=True)
    rc, text = finish(proc)
    assert rc == 0, text[-4000:]
    return out, text


def _losses(out: Path) -> dict[int, float]:
    return {k: s["loss"] for k, s in _steps(out).items()}


def _steps(out: Path) -> dict[int, dict[str, float]]:
    from orchestrator.training.loop import read_steps

    return read_steps(str(out))


def _run_id(text: str) -> str:
    m = re.search(r"MLflow run (\w+)", text)
    assert m, text[-3000:]
    return m.group(1)


def _mlflow_steps(cluster, run_id: str, key: str = "loss") -> list[int]:
    from mlflow import MlflowClient

    return sorted(m.step for m in MlflowClient(cluster.mlflow_uri).get_metric_history(run_id, key))


def _wait_for(path: Path, proc, timeout: float = 300, every: float = 0.02) -> None:
    deadline = time.time() + timeout
    while not path.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(every)


def test_two_nodes_joined_with_their_labels(two_node_cluster):
    labels = sorted(n.get("labels", {}).get("node_group", "") for n in two_node_cluster.alive_nodes())
    assert labels == ["head", "worker"]


def test_spread_puts_the_ranks_on_different_nodes(two_node_cluster, spread):
    placement = json.loads((spread[0] / "placement.json").read_text())
    assert [p["rank"] for p in placement] == [0, 1]
    assert len({p["node_id"] for p in placement}) == 2
    # rank 0 (it writes the output directory and the export) runs on the driver's node, the head
    assert placement[0]["node_id"] == two_node_cluster.node_ids()["head"]
    assert {p["local_dir"] for p in placement} == {str(two_node_cluster.head_dir / "scratch"),
                                                   str(two_node_cluster.worker_dir / "scratch")}


def test_checkpoints_are_committed_on_s3_from_both_nodes(two_node_cluster, spread):
    """``cluster.storage_path=s3://...`` on a real S3 endpoint: every node uploads its ranks' files, the commit
    marker is the newest object of the checkpoint, two checkpoints are kept; the credentials (the nodes'
    environment) appear neither in the job's output nor in its MLflow run."""
    from mlflow import MlflowClient

    cluster, s3 = two_node_cluster, two_node_cluster.s3
    text = spread[1]
    key = f"{S3_PREFIX}/spread/checkpoints"
    tag = f"step_{STEPS:08d}"
    assert s3.read_text(f"{key}/latest").strip() == tag
    stored = s3.files(f"{key}/{tag}")
    assert "COMMITTED" in stored
    # each node wrote its ranks' files into its own mirror (its scratch dir) and uploaded them: rank 1's
    # RNG state exists only in the worker node's mirror, so it reached the store from there
    head, worker = (_mirror(d, "spread") for d in (cluster.head_dir, cluster.worker_dir))
    assert (head / tag / "rng" / "rank_0.json").is_file() and not (head / tag / "rng" / "rank_1.json").exists()
    assert (worker / tag / "rng" / "rank_1.json").is_file() and not (worker / tag / "rng" / "rank_0.json").exists()
    assert {"rng/rank_0.json", "rng/rank_1.json"} <= set(stored)
    local = {str(p.relative_to(head / tag)): p.stat().st_size for p in (head / tag).rglob("*") if p.is_file()}
    assert {k: v for k, v in local.items() if k != "COMMITTED"} == \
        {k: i.size for k, i in stored.items() if k in local and k != "COMMITTED"}  # rank 0's files, byte counts
    assert all(i.mtime <= stored["COMMITTED"].mtime for i in stored.values())  # the commit marker was written last
    assert s3.names(key) == ["latest", f"step_{STEPS - 2:08d}", tag]  # keep_checkpoints=2
    assert sorted(p.name for p in worker.iterdir()) == [tag]  # a non-zero node's mirror keeps only the newest
    assert f"checkpoint {s3.uri(key)}/{tag}" in text
    secret = s3.env["AWS_SECRET_ACCESS_KEY"]
    run = MlflowClient(cluster.mlflow_uri).get_run(_run_id(text))
    assert run.data.params["cluster.storage_path"] == s3.uri(S3_PREFIX)
    assert secret not in text and secret not in json.dumps([run.data.params, run.data.tags])


def _mirror(node_dir: Path, run: str) -> Path:
    """A node's local checkpoint mirror of a run with URI storage (under its ``ORCHESTRATOR_LOCAL_DIR``)."""
    found = list((node_dir / "scratch" / "checkpoints").glob(f"{run}-*"))
    assert len(found) == 1, found
    return found[0]


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
    stored = [p for p in (two_node_cluster.head_dir / "mlartifacts").rglob("model.safetensors") if run_id in str(p)]
    assert stored and stored[0].stat().st_size == (out / "export" / "model.safetensors").stat().st_size


def test_tensor_parallel_groups_are_placed_whole_on_one_node(two_node_cluster):
    """A tp2 group is one placement-group bundle: under ``spread`` (which put two single-rank bundles on two
    nodes, see above) its two ranks share a node; two tp2 groups go one per node, ranks 0-1 on the driver's
    node. Where each rank ran is what its own process reports. No training: a few processes only."""
    cluster = two_node_cluster
    cluster.ensure_worker()
    nodes = cluster.node_ids()
    layouts = [{"num_workers": 2, "model_parallel": 2, "placement": "spread"},
               {"num_workers": 4, "model_parallel": 2, "placement": "spread"}]
    proc = subprocess.run([sys.executable, "-m", "tests.integration.placement_probe", cluster.gcs,
                           *map(json.dumps, layouts)], cwd=REPO, env=cluster.env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    one, two = [sorted(json.loads(line), key=lambda r: r["rank"]) for line in proc.stdout.splitlines()
                if line.startswith("[")]
    for ranks in (one, two):
        assert all(r["node_id"] == r["context_node_id"] for r in ranks)
    assert len({r["node_id"] for r in one}) == 1 and [r["local_rank"] for r in one] == [0, 1]
    assert [r["node_id"] for r in two] == [nodes["head"]] * 2 + [nodes["worker"]] * 2
    assert two[0]["driver_node"] == nodes["head"] and [r["local_rank"] for r in two] == [0, 1, 0, 1]


def test_pack_then_resume_from_s3_after_the_output_dir_is_lost(two_node_cluster, spread):
    cluster, s3 = two_node_cluster, two_node_cluster.s3
    ref = _losses(spread[0])
    proc, out = _job(cluster, "packed", "trainer.fail_at_step=5", "trainer.max_failures=0", s3=True)
    rc, text = finish(proc)
    assert rc != 0, text[-3000:]
    placement = json.loads((out / "placement.json").read_text())
    assert len({p["node_id"] for p in placement}) == 1  # pack: both ranks on one node,
    assert placement[0]["node_id"] == cluster.node_ids()["head"]  # the driver's (it holds the output dir)
    key = f"{S3_PREFIX}/packed/checkpoints"
    assert s3.read_text(f"{key}/latest").strip() == "step_00000004"
    first_run = json.loads((out / "tracking.json").read_text())["run_id"]
    shutil.rmtree(out)  # the node-local output directory and checkpoint mirrors are gone; the store remains
    for mirror in cluster.head_dir.parent.glob("*/scratch/checkpoints/packed-*"):
        shutil.rmtree(mirror)

    proc, out = _job(cluster, "packed", s3=True)
    rc, text = finish(proc)
    assert rc == 0, text[-4000:]
    resumed = _losses(out)
    assert sorted(resumed) == list(range(5, STEPS + 1))  # steps 1-4 came from the checkpoint, not recomputed
    assert resumed == {k: ref[k] for k in resumed}
    assert _run_id(text) == first_run  # the run id came back from the checkpoint
    assert _mlflow_steps(cluster, first_run) == list(range(1, STEPS + 1))
    assert s3.read_text(f"{key}/latest").strip() == f"step_{STEPS:08d}"


def test_node_loss_mid_run_recovers_on_the_remaining_node(two_node_cluster, spread):
    cluster = two_node_cluster
    cluster.ensure_worker()
    ref = _losses(spread[0])
    proc, out = _job(cluster, "node_loss", "cluster.placement=spread", "trainer.max_failures=1")
    root = _storage(cluster) / "node_loss" / "checkpoints"
    _wait_for(root / "step_00000002" / "COMMITTED", proc)
    placement = json.loads((out / "placement.json").read_text())
    killed_at = max(_losses(out))
    cluster.kill_worker_node()
    rc, text = finish(proc)
    assert rc == 0, text[-4000:]
    assert len({p["node_id"] for p in placement}) == 2  # the first attempt used both nodes
    after = json.loads((out / "placement.json").read_text())
    assert len({p["node_id"] for p in after}) == 1 and after != placement  # the restart: the head alone
    assert killed_at < STEPS, "the node was killed after the run had finished"
    assert _losses(out) == ref  # every step, recomputed ones included, equals the uninterrupted run's
    assert (root / "latest").read_text().strip() == f"step_{STEPS:08d}" and not (out / "checkpoints").exists()
    assert _mlflow_steps(cluster, _run_id(text)) == list(range(1, STEPS + 1))


ELASTIC_RTOL = 1e-6
"""Relative difference allowed between the losses after an elastic shrink and the uninterrupted run's: the same
gradients summed in another order (see ``orchestrator.training.elastic``)."""


def test_node_loss_with_min_workers_restarts_with_fewer_ranks_and_the_same_losses(two_node_cluster, spread):
    """Two ranks of 2 CPUs each (a node holds one); the worker node dies after step 2 is committed; the head
    alone cannot hold two ranks, so after ``cluster.elastic_wait_s`` the group restarts with one rank (the global
    batch kept by twice the gradient accumulation), resumes from the newest committed checkpoint and ends with
    the uninterrupted run's losses: the same bits up to the checkpoint, within :data:`ELASTIC_RTOL` after it;
    each MLflow step once."""
    from orchestrator.engine.checkpoint import read_trainer_state

    cluster = two_node_cluster
    cluster.ensure_worker()
    ref, ref_steps = _losses(spread[0]), _steps(spread[0])
    proc, out = _job(cluster, "elastic", "cluster.placement=spread", "trainer.max_failures=1",
                     "cluster.cpus_per_worker=2", "+cluster.env.OMP_NUM_THREADS=1", "cluster.min_workers=1",
                     "cluster.elastic_wait_s=5")
    root = _storage(cluster) / "elastic" / "checkpoints"
    _wait_for(root / "step_00000002" / "COMMITTED", proc)
    assert proc.poll() is None, finish(proc)[1][-4000:]
    placement = json.loads((out / "placement.json").read_text())
    killed_at = max(_losses(out))
    cluster.kill_worker_node()
    rc, text = finish(proc)
    assert rc == 0, text[-4000:]
    assert killed_at < STEPS, "the node was killed after the run had finished"
    assert len({p["node_id"] for p in placement}) == 2  # one rank per node before the loss
    after = json.loads((out / "placement.json").read_text())
    assert [p["rank"] for p in after] == [0] and after[0]["node_id"] == placement[0]["node_id"]  # the head alone
    log_text = (out / "logs" / "orchestrator.log").read_text()
    assert "restarting with 1 of 2 ranks" in log_text, log_text[-3000:]
    final = read_trainer_state(root / (root / "latest").read_text().strip())
    assert final["step"] == STEPS and final["world_size"] == 1  # the last steps ran on one rank
    got, steps = _losses(out), _steps(out)
    assert sorted(got) == list(range(1, STEPS + 1))
    assert {k: got[k] for k in (1, 2)} == {k: ref[k] for k in (1, 2)}  # committed before the loss: two ranks
    worst = max(abs(got[k] - ref[k]) / abs(ref[k]) for k in got)
    print(f"elastic: losses after the shrink within a relative {worst:.2e} of the uninterrupted run's")
    assert worst <= ELASTIC_RTOL, {k: (got[k], ref[k]) for k in got}
    assert all(steps[k]["tokens_seen"] == ref_steps[k]["tokens_seen"] for k in got)  # the global batch was kept
    assert _mlflow_steps(cluster, _run_id(text)) == list(range(1, STEPS + 1))


_NOT_COMPARED = ("step_time_s", "end_time_s", "tokens_per_s")


def test_ppo_role_on_the_lost_node_recovers_with_the_same_steps(two_node_cluster):
    """PPO with its roles (actor, critic, reference, reward) spread over both nodes; the worker node dies once
    the first step is committed; the controller restarts the roles on the head, reloads the last committed
    checkpoint and finishes with the per-step metrics of an uninterrupted run (``ppo_ref``), each MLflow step
    once."""
    cluster = two_node_cluster
    cluster.ensure_worker()
    proc, ref_out = _ppo(cluster, "ppo_ref", "trainer.export=true")
    rc, text = finish(proc)
    assert rc == 0, text[-4000:]
    ref = _steps(ref_out)
    assert sorted(ref) == list(range(1, PPO_STEPS + 1))
    # the actor's export reached the driver's node (from the actor's node when they differ)
    assert (ref_out / "export" / "model.safetensors").is_file() and (ref_out / "export" / "config.json").is_file()
    assert not list(ref_out.glob("export.from-*"))

    cluster.ensure_worker()  # still (or again) two nodes after the reference run
    worker = cluster.node_ids()["worker"]  # before the job: listing the nodes takes a moment, a step does not
    t0 = time.time()
    proc, out = _ppo(cluster, "ppo_node_loss", "trainer.max_failures=1", "trainer.export=false")
    root = _storage(cluster) / "ppo_node_loss" / "checkpoints"
    _wait_for(root / "latest", proc)  # the first commit
    killed_at = max(_steps(out), default=0)
    before = json.loads((out / "placement.json").read_text())
    cluster.kill_worker_node()
    rc, text = finish(proc)
    print(f"ppo run with the node loss: {time.time() - t0:.0f} s")
    assert rc == 0, text[-4000:]
    assert killed_at < PPO_STEPS, "the node was killed after the run had finished"
    assert worker in {p["node_id"] for p in before}, before  # a role ran on the node that was lost
    assert {p["role"] for p in before} == {"actor", "critic", "reference", "reward"}
    after = json.loads((out / "placement.json").read_text())
    assert worker not in {p["node_id"] for p in after}, after  # the restarted roles: the head alone
    # the processes of the roles that ran on the head serve the restarted roles; one new process per lost rank
    kept, now = {p["pid"] for p in before if p["node_id"] != worker}, {p["pid"] for p in after}
    assert kept <= now and len(now - kept) == sum(p["node_id"] == worker for p in before), (before, after)
    log_text = (out / "logs" / "orchestrator.log").read_text()
    assert "role died at step" in log_text and "recovering from the last checkpoint" in log_text, log_text[-3000:]
    got = _steps(out)
    assert sorted(got) == list(range(1, PPO_STEPS + 1))
    for step in got:
        compared = {k: v for k, v in got[step].items() if k not in _NOT_COMPARED and not k.startswith("time_")}
        assert {"reward_mean", "kl", "policy_loss", "value_loss"} <= set(compared), sorted(compared)
        assert compared == {k: ref[step][k] for k in compared}, step
    run_id = json.loads((out / "tracking.json").read_text())["run_id"]
    assert _mlflow_steps(cluster, run_id, "reward_mean") == list(range(1, PPO_STEPS + 1))


def _markers(out: Path) -> dict[Path, int]:
    """The dedup shuffle's task markers (scatter and gather) with their modification times."""
    return {p: p.stat().st_mtime_ns for p in (out / "work" / "dedup").glob("**/_markers/**/*") if p.is_file()}


def _digest(out: Path) -> str:
    return json.loads((out / "dataset" / "manifest.json").read_text())["digest"]


def test_data_prep_node_lost_during_the_dedup_shuffle_resumes_from_the_task_markers(two_node_cluster):
    """The worker node dies once the first dedup shuffle task has written its marker; the job (Ray Data
    re-runs the lost tasks; rerun if the loss failed it) ends with the dataset of an uninterrupted run
    (``dp_ref``), and tasks whose markers existed at the kill are not redone."""
    cluster = two_node_cluster
    cluster.ensure_worker()
    proc, ref_out = _data_prep(cluster, "dp_ref")
    rc, text = finish(proc)
    assert rc == 0, text[-4000:]
    t0 = time.time()
    proc, out = _data_prep(cluster, "dp_node_loss")
    deadline = time.time() + 300
    while not _markers(out) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the job ended before its dedup shuffle started"
    marked = _markers(out)
    cluster.kill_worker_node()
    redone = _rewritten_while_running(proc, marked)  # Ray Data re-runs lost tasks: those with a marker skip
    rc, text = finish(proc)
    print(f"data_prep with the node loss: rc {rc} after {time.time() - t0:.0f} s, {len(marked)} tasks marked")
    if rc != 0:  # the loss failed the job: a rerun continues from the markers
        proc, _ = _data_prep(cluster, "dp_node_loss")
        redone |= _rewritten_while_running(proc, marked)
        rc, text = finish(proc)
        print(f"data_prep rerun: rc {rc} after {time.time() - t0:.0f} s")
    assert rc == 0, text[-4000:]
    assert marked, "no shuffle task had finished when the node was lost"
    assert not redone, redone  # tasks with a marker were skipped, not run again
    assert _digest(out) == _digest(ref_out)


def _rewritten_while_running(proc, files: dict[Path, int]) -> set[Path]:
    """Files of ``files`` (path -> mtime) rewritten while ``proc`` runs (a finished step deletes its
    scratch markers, so they are watched rather than compared at the end)."""
    seen: set[Path] = set()
    while proc.poll() is None:
        for p, mtime in files.items():
            try:
                if p.stat().st_mtime_ns != mtime:
                    seen.add(p)
            except FileNotFoundError:
                pass
        time.sleep(0.05)
    return seen

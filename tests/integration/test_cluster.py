"""Cluster operations against a real ``ray start --head`` (token auth) and a real ``mlflow server``.

Everything goes through the ``orchestrator`` CLI as a user types it; results are read back through
the Jobs API (CLI) and the MLflow REST API.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from tests.integration.cluster_helpers import field_of

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def loss_history(cluster, run_id: str) -> list[tuple[int, float]]:
    hist = cluster.mlflow_get("metrics/get-history", run_id=run_id, metric_key="loss", max_results=1000)
    return sorted((m["step"], m["value"]) for m in hist.get("metrics", []))


def test_submitted_pretrain_succeeds_with_its_run_on_the_server(local_cluster, finished_pretrain):
    job = finished_pretrain
    assert job.logs_rc == 0, job.logs_out[-4000:]
    assert f"job {job.job_id} SUCCEEDED" in job.logs_out
    assert "python -m jobs.pretrain" in job.logs_out and "cluster.address=auto" in job.logs_out
    # The printed link points at this run on the tracking server.
    run = local_cluster.mlflow_get("runs/get", run_id=job.run_id)["run"]
    link = field_of(job.submit_out, "mlflow")
    assert link == (f"{local_cluster.mlflow_uri}/#/experiments/{run['info']['experiment_id']}/runs/{job.run_id}"
                    "?workflowType=machine_learning")
    assert run["info"]["status"] == "FINISHED"
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert tags["ray_job_id"] == job.job_id and tags["job_kind"] == "pretrain"
    assert len(tags["git_commit"]) == 40  # the submitter's commit (the uploaded copy has no .git)
    # One loss point per step, all finite, and training made progress.
    hist = loss_history(local_cluster, job.run_id)
    assert [s for s, _ in hist] == [1, 2, 3, 4, 5, 6]
    assert all(math.isfinite(v) for _, v in hist) and hist[-1][1] < hist[0][1]
    # Artifacts went through the server (proxied) into its artifact store, not onto the worker's disk.
    assert run["info"]["artifact_uri"].startswith("mlflow-artifacts:")
    assert list((local_cluster.dir / "mlartifacts").rglob("resolved.yaml"))

    status = local_cluster.cli("status", job.job_id, "--address", local_cluster.address)
    assert status.returncode == 0, status.stderr
    assert "status: SUCCEEDED" in status.stdout and job.run_id in status.stdout
    listing = local_cluster.cli("list", "--address", local_cluster.address)
    assert any(job.job_id in ln and "SUCCEEDED" in ln and "pretrain" in ln for ln in listing.stdout.splitlines()), \
        listing.stdout + listing.stderr


def _wait_for_checkpoint(root: Path, min_step: int, timeout_s: float, cluster, job_id: str) -> int:
    """Until a committed checkpoint of step >= ``min_step`` exists under ``root``; returns its step. Fails at
    once, with the job's logs, when the job ends first. (Any such checkpoint, not one tag: with
    ``trainer.keep_checkpoints=2`` a fast run prunes a given tag within a second of committing it.)"""
    from orchestrator.engine.checkpoint import latest_committed, read_trainer_state

    deadline, checked = time.time() + timeout_s, time.time()
    while True:
        latest = latest_committed(root) if root.exists() else None
        if latest is not None:
            try:
                step = int(read_trainer_state(latest)["step"])
            except (OSError, ValueError, KeyError):  # pruned between the lookup and the read: look again
                step = -1
            if step >= min_step:
                return step
        if time.time() - checked > 5:
            status, logs = cluster.job_status(job_id)
            assert status in ("PENDING", "RUNNING"), f"job {job_id} {status} before a checkpoint >= {min_step}: {logs}"
            checked = time.time()
        assert time.time() < deadline, f"no checkpoint >= {min_step} in {timeout_s}s: {cluster.job_status(job_id)}"
        time.sleep(0.1)


def test_stop_marks_run_killed_and_resume_continues_the_same_run(local_cluster, finished_pretrain):
    # Long enough that the stop lands mid-run: a tiny step takes 0.03-0.1 s once the workers are up (CI's machine
    # ran 120 steps in ~4 s) and the stop below is a new CLI process.
    steps = 800
    sub = local_cluster.cli(*local_cluster.submit_args("stopresume", f"trainer.max_steps={steps}"))
    assert sub.returncode == 0, sub.stdout + sub.stderr
    job_id, run_id = field_of(sub.stdout, "job"), field_of(sub.stdout, "mlflow_run_id")
    _wait_for_checkpoint(local_cluster.workspace / "stopresume" / "checkpoints", 4, 300, local_cluster, job_id)
    assert local_cluster.job_status(job_id)[0] == "RUNNING"  # the job status the stop below changes

    stop = local_cluster.cli("stop", job_id, "--address", local_cluster.address)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert f"job {job_id} STOPPED" in stop.stdout and f"mlflow run {run_id} KILLED" in stop.stdout
    assert local_cluster.mlflow_get("runs/get", run_id=run_id)["run"]["info"]["status"] == "KILLED"
    stopped_at = max(s for s, _ in loss_history(local_cluster, run_id))
    assert 4 <= stopped_at < steps

    # Resume by the MLflow run id: same resolved config, resume=auto, same run.
    res = local_cluster.cli("resume", run_id, "--address", local_cluster.address)
    assert res.returncode == 0, res.stdout + res.stderr
    new_job = field_of(res.stdout, "job")
    assert new_job != job_id and field_of(res.stdout, "mlflow_run_id") == run_id
    logs = local_cluster.cli("logs", new_job, "--follow", "--address", local_cluster.address, timeout=600)
    assert logs.returncode == 0, (logs.stdout + logs.stderr)[-4000:]
    assert "resume=auto" in logs.stdout
    resumed = [ln for ln in logs.stdout.splitlines() if "resumed from" in ln]
    assert resumed and "stopresume/checkpoints/step_" in resumed[0]
    resumed_step = int(resumed[0].rsplit("at step", 1)[1].split()[0])
    assert 4 <= resumed_step <= stopped_at

    run = local_cluster.mlflow_get("runs/get", run_id=run_id)["run"]
    assert run["info"]["status"] == "FINISHED"
    assert {t["key"]: t["value"] for t in run["data"]["tags"]}["ray_job_id"] == new_job
    # Every step logged exactly once across the stop and the resume.
    assert [s for s, _ in loss_history(local_cluster, run_id)] == list(range(1, steps + 1))


def test_submission_without_or_with_a_wrong_token_is_refused(local_cluster, tmp_path):
    env = {k: v for k, v in local_cluster.env.items() if k not in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")}
    env["HOME"] = str(tmp_path)  # no ~/.ray/auth_token either
    before = local_cluster.cli("list", "--address", local_cluster.address).stdout.count("\n")

    no_token = local_cluster.cli(*local_cluster.submit_args("refused", "trainer.max_steps=2"), env=env, timeout=120)
    assert no_token.returncode == 2
    err = no_token.stderr.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert err.startswith("error: RAY_AUTH_TOKEN: no Ray auth token found for the cluster at http://127.0.0.1:"), err
    # The server side refuses a token-less request as well (the CLI above stops before sending one).
    import requests

    assert requests.post(f"{local_cluster.address}/api/jobs/", json={"entrypoint": "true"}, timeout=30).status_code == 401

    wrong = local_cluster.cli(*local_cluster.submit_args("refused", "trainer.max_steps=2"),
                              env=dict(env, RAY_AUTH_TOKEN="not-the-token"), timeout=120)
    assert wrong.returncode == 2 and "rejected the auth token" in wrong.stderr and local_cluster.token not in wrong.stderr
    assert local_cluster.cli("list", "--address", local_cluster.address).stdout.count("\n") == before

"""The whole tiny pipeline on CPU, as a user runs it: one command, local Ray, local MLflow store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import REPO

pytestmark = pytest.mark.slow

STAGES = ("data_prep", "pretrain", "sft", "reward_model", "ppo")


def run_pipeline(workspace: Path, *overrides: str, timeout: float = 1500) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "orchestrator.cli", "run", "pipeline", f"workspace={workspace}", *overrides]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    ws = tmp_path_factory.mktemp("pipeline")
    t0 = time.time()
    res = run_pipeline(ws)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    return ws, res, time.time() - t0


def _client(ws: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{ws}/mlflow.db")


def test_every_stage_is_a_finished_child_run_with_metrics(finished):
    ws, res, _ = finished
    client = _client(ws)
    exp = client.get_experiment_by_name("orchestrator")
    parents = client.search_runs([exp.experiment_id], "tags.job_kind = 'pipeline'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    by_kind = {c.data.tags["job_kind"]: c for c in children}
    assert sorted(by_kind) == sorted(STAGES)
    for kind, child in by_kind.items():
        assert child.info.status == "FINISHED", kind
        assert child.data.metrics, f"{kind} logged no metrics"
        assert child.data.tags["pipeline"] == "default" and child.data.tags["config_hash"]
    parent_artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"pipeline_summary.json", "pipeline_overview.json", "pipeline_dag.svg"} <= parent_artifacts
    assert all(r.data.tags.get("mlflow.note.content") for r in [parent, *children])  # one-sentence descriptions
    sft_samples = {a.path for a in client.list_artifacts(by_kind["sft"].info.run_id, "samples")}
    assert "samples/step_000150.json" in sft_samples  # the sft sample table of the last step (150)
    assert "Open the MLflow UI:  mlflow ui --backend-store-uri sqlite:///" in res.stdout


LIBRARY_LINES = ("Reporting training result", "built successfully", "Loading weights", "Writing model shards",
                 "core_worker.cc", "PreemptionWatcher", "RayTrainWorker pid=", "GroupWorker pid=", "Warning:", "INFO ", "[INFO]")


def test_console_shows_progress_and_summary_and_keeps_library_output_in_the_log(finished):
    ws, res, _ = finished
    console = (res.stdout + res.stderr).splitlines()
    assert not [ln for ln in console if any(s in ln for s in LIBRARY_LINES)]
    log = Path(console[0].removeprefix("logs: "))  # the log file's path comes first
    assert console[0].startswith("logs: ") and log.is_file()
    kept = log.read_text()
    assert [s for s in LIBRARY_LINES[:4] if s in kept]  # the library output went to the log instead
    assert all(f"[{i}/5] {s} ({s}): running" in kept for i, s in enumerate(STAGES, 1))  # ours is there too
    for i, stage in enumerate(STAGES, 1):
        start = console.index(f"[{i}/5] {stage} ({stage}): running")
        done = next(j for j, ln in enumerate(console) if ln.startswith(f"[{i}/5] {stage} ({stage}): done in "))
        seconds = float(console[done].split("done in ")[1].split("s")[0])
        assert done - start - 1 <= 4 + seconds / 15, console[start:done + 1]  # periodic lines, no flood
    header = next(j for j, ln in enumerate(console) if ln.split()[:3] == ["stage", "kind", "status"])
    assert all(console[header + 1 + i].split()[:3] == [s, s, "FINISHED"] for i, s in enumerate(STAGES, 1))


def test_lineage_from_ppo_model_back_to_the_dataset_digest(finished):
    ws, _, _ = finished
    client = _client(ws)
    out = ws / "pipeline-default"
    digest = json.loads((out / "data_prep" / "dataset" / "manifest.json").read_text())["digest"]
    chain = []
    name, version = "pipeline-default-ppo", "1"
    while True:  # walk the registry only: each version names its upstream version
        mv = client.get_model_version(name, version)
        chain.append(name)
        if "upstream_model" not in mv.tags:
            break
        name, version = mv.tags["upstream_model"].split("/")
    assert chain == ["pipeline-default-ppo", "pipeline-default-sft", "pipeline-default-pretrain"]
    assert mv.tags["upstream_dataset_digest"] == digest
    ppo = client.get_model_version("pipeline-default-ppo", "1")
    assert ppo.tags["upstream_reward_model"] == "pipeline-default-reward_model/1"


def test_rerun_skips_every_stage_in_seconds(finished):
    ws, _, _ = finished
    t0 = time.time()
    res = run_pipeline(ws, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert time.time() - t0 < 60
    for stage in STAGES:
        assert f"{stage} ({stage}): already complete, skipped" in res.stdout
    client = _client(ws)
    exp = client.get_experiment_by_name("orchestrator")
    assert len(client.search_runs([exp.experiment_id], "tags.job_kind = 'pretrain'")) == 1  # no new child runs


def test_killed_during_pretrain_resumes_on_rerun(tmp_path):
    overrides = ("pipeline=pretrain_only", "pipeline.stages.1.overrides=['trainer.max_steps=40','trainer.save_every=4']")
    cmd = [sys.executable, "-m", "orchestrator.cli", "run", "pipeline", f"workspace={tmp_path}", *overrides]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    ckpts = tmp_path / "pipeline-pretrain_only" / "pretrain" / "checkpoints"
    deadline = time.time() + 900
    while time.time() < deadline and proc.poll() is None:
        if any((d / "COMMITTED").exists() for d in ckpts.glob("step_*")):
            break
        time.sleep(1)
    assert proc.poll() is None, "pipeline ended before the first pretrain checkpoint"
    os.killpg(proc.pid, signal.SIGKILL)  # a hard crash: no cleanup code runs
    proc.wait(30)
    run_id = json.loads((ckpts.parent / "tracking.json").read_text())["run_id"]
    res = run_pipeline(tmp_path, *overrides)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "data_prep (data_prep): already complete, skipped" in res.stdout
    marker = json.loads((ckpts.parent / "_COMPLETE.json").read_text())
    assert marker["result"]["resumed_from"], "pretrain started over instead of resuming"
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    assert json.loads((ckpts.parent / "tracking.json").read_text())["run_id"] == run_id
    steps = [m.step for m in client.get_metric_history(run_id, "loss")]
    assert sorted(steps) == list(range(1, 41))  # every step exactly once, across the crash
    assert client.get_run(run_id).info.status == "FINISHED"

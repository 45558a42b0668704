"""JobTracker/MetricsLogger against a real local MLflow store (sqlite)."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
from pathlib import Path

import pytest
from mlflow import MlflowClient

from orchestrator.kinds import load
from orchestrator.data.shards import write_packed_dataset
from orchestrator.tracking import JobTracker, MetricsLogger
from orchestrator.models.build import resolve_pretrained


@pytest.fixture
def cfg(workspace):
    return load("pretrain", [f"workspace={workspace}", "run_name=t", "+tracking.tags.team=ml"])


def test_run_lifecycle_resume_and_idempotent_metrics(cfg):
    with JobTracker.start(cfg) as tr:
        for step in range(1, 4):
            tr.log_metrics({"loss": 1.0 / step}, step)
        run_id = tr.run_id
        assert not tr.resumed
    client = MlflowClient(cfg.tracking.uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["job_kind"] == "pretrain" and run.data.tags["team"] == "ml"
    assert run.data.params["trainer.max_steps"] == "20"
    # the UI opens the experiment in its model-training view, not the GenAI one
    assert client.get_experiment(run.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    assert tr.experiment_id == run.info.experiment_id  # for UI links
    # the same run directory resumes into the same run; replayed steps are not written twice
    with JobTracker.start(cfg) as tr2:
        assert tr2.resumed and tr2.run_id == run_id and tr2.experiment_id == run.info.experiment_id
        for step in range(2, 6):
            tr2.log_metrics({"loss": 1.0 / step}, step)
    steps = sorted(m.step for m in client.get_metric_history(run_id, "loss"))
    assert steps == [1, 2, 3, 4, 5]
    # resume=never starts a fresh run
    fresh = dataclasses.replace(cfg, resume="never")
    with JobTracker.start(fresh) as tr3:
        assert tr3.run_id != run_id


def test_failed_and_killed_status(cfg):
    client = MlflowClient(cfg.tracking.uri)
    with pytest.raises(RuntimeError):
        with JobTracker.start(dataclasses.replace(cfg, run_name="fails", output_dir=cfg.output_dir + "-f")) as tr:
            raise RuntimeError("boom")
    assert client.get_run(tr.run_id).info.status == "FAILED"
    with pytest.raises(KeyboardInterrupt):
        with JobTracker.start(dataclasses.replace(cfg, run_name="killed", output_dir=cfg.output_dir + "-k")) as tr:
            raise KeyboardInterrupt
    assert client.get_run(tr.run_id).info.status == "KILLED"


def test_outage_buffers_then_flushes(cfg, tmp_path):
    with JobTracker.start(cfg) as tr:
        good = tr.metrics.client
        monkey_env = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "2"}
        import os
        old = {k: os.environ.get(k) for k in monkey_env}
        os.environ.update(monkey_env)
        try:
            logger = MetricsLogger(MlflowClient("http://127.0.0.1:9"), tr.run_id, flush_every=1)  # nothing listens
            t0 = time.monotonic()
            logger.log({"loss": 0.5}, 7)  # must neither raise nor block the caller
            assert time.monotonic() - t0 < 1.0
            assert not logger.flush(timeout_s=20) and logger.pending == 1
        finally:
            for k, v in old.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        logger.client = good  # the server is back
        assert logger.flush() and logger.pending == 0
        assert [m.step for m in good.get_metric_history(tr.run_id, "loss")] == [7]


def test_dataset_lineage_and_registry(cfg, tmp_path):
    ds = tmp_path / "ds"
    write_packed_dataset(ds, [np.arange(16).reshape(2, 8)], seq_len=8, vocab_size=32, eos_token_id=0)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    with JobTracker.start(cfg) as tr:
        digest = tr.log_dataset(ds, context="train")
        version = tr.register_model(model_dir, "tiny-lm", tags={"dataset_digest": digest})
    client = MlflowClient(cfg.tracking.uri)
    run = client.get_run(tr.run_id)
    assert run.inputs.dataset_inputs[0].dataset.digest == digest[:36]
    assert client.get_model_version("tiny-lm", version).tags["dataset_digest"] == digest
    local = Path(resolve_pretrained(f"models:/tiny-lm/{version}", str(tmp_path / "dl"), cfg.tracking.uri))
    assert (local / "config.json").read_text() == "{}"


def test_system_metrics_are_logged(cfg, monkeypatch):
    import dataclasses as dc

    with JobTracker.start(cfg) as tr:
        tr._system_monitor.finish()  # replace the default 10 s sampler by a fast one for the test
        tr._start_system_metrics(sampling_interval_s=0.2)
        time.sleep(1.5)
    keys = MlflowClient(cfg.tracking.uri).get_run(tr.run_id).data.metrics
    assert any(k.startswith("system/cpu_utilization") for k in keys), keys
    off = dc.replace(cfg, run_name="nosys", output_dir=cfg.output_dir + "-n",
                     tracking=dc.replace(cfg.tracking, log_system_metrics=False))
    with JobTracker.start(off) as tr2:
        assert tr2._system_monitor is None


def test_from_run_with_an_unreachable_server_neither_raises_nor_blocks(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    t0 = time.monotonic()
    logger = MetricsLogger.from_run("http://127.0.0.1:9", "0" * 32, flush_every=1)  # nothing listens
    logger.log({"loss": 0.5}, 1)
    assert time.monotonic() - t0 < 1.0
    assert not logger.flush(timeout_s=20) and logger.pending == 1

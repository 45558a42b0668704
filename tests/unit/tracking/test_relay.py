"""Rank 0's metrics relayed to MLflow by the driver (orchestrator.tracking.relay), against a real sqlite store.

The rank side (RelaySink) runs in a thread here, as it runs in another process on the same node in a job: the
two only share files in the output directory.
"""

from __future__ import annotations

import json
import time

import pytest
from mlflow import MlflowClient

from orchestrator.kinds import load
from orchestrator.tracking import JobTracker
from orchestrator.tracking.relay import ACK_FILE, RELAY_FILE, RelaySink, relay_metrics


@pytest.fixture
def cfg(workspace):
    return load("pretrain", [f"workspace={workspace}", "run_name=relay"])


def _steps(client, run_id, key):
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def test_flush_confirms_the_points_are_in_the_store_and_tables_reach_the_run(cfg, tmp_path):
    out = tmp_path / "job"
    with JobTracker.start(cfg) as tr, relay_metrics(out, tr.client, tr.run_id):
        sink = RelaySink(out, tr.run_id)
        for step in range(1, 6):
            sink.log({"loss": 1.0 / step, "lr": 0.1, "skipped": None}, step)
        # nothing is written to MLflow before a flush is asked for (batched, like the direct logger)
        time.sleep(0.3)
        assert _steps(tr.client, tr.run_id, "loss") == []
        assert sink.flush()  # returns only once the driver wrote every point up to here
        assert _steps(tr.client, tr.run_id, "loss") == [1, 2, 3, 4, 5]
        assert _steps(tr.client, tr.run_id, "lr") == [1, 2, 3, 4, 5]
        assert tr.client.get_metric_history(tr.run_id, "skipped") == []
        (out / "samples").mkdir()
        (out / "samples/step_000005.json").write_text(json.dumps({"step": [5], "prompt": ["2+2="]}))
        sink.table_written("samples/step_000005.json")
        sink.log({"eval_loss": 0.25}, 5)
        sink.close()  # the final flush
        assert _steps(tr.client, tr.run_id, "eval_loss") == [5]
    (tmp_path / "dl").mkdir()
    local = MlflowClient(cfg.tracking.uri).download_artifacts(tr.run_id, "samples/step_000005.json", str(tmp_path / "dl"))
    table = json.loads(open(local).read())
    assert table == {"columns": ["step", "prompt"], "data": [[5, "2+2="]]}


def test_a_line_cut_short_by_a_dead_rank_is_skipped_and_the_restarted_rank_goes_on(cfg, tmp_path):
    out = tmp_path / "job"
    with JobTracker.start(cfg) as tr, relay_metrics(out, tr.client, tr.run_id):
        first = RelaySink(out, tr.run_id)
        first.log({"loss": 1.0}, 1)
        first._file.write(b'{"s": 2, "t": 1, "m": {"loss"')  # the rank died mid-line
        first._file.flush()
        again = RelaySink(out, tr.run_id)  # the restarted rank 0 (a new process in a job)
        again.log({"loss": 0.5}, 2)
        again.log({"loss": 0.25}, 3)
        assert again.flush()
        assert [(m.step, m.value) for m in sorted(tr.client.get_metric_history(tr.run_id, "loss"),
                                                  key=lambda m: m.step)] == [(1, 1.0), (2, 0.5), (3, 0.25)]
    lines = (out / RELAY_FILE).read_bytes().split(b"\n")
    assert b'{"s": 2, "t": 1, "m": {"loss"' in lines  # the partial line stayed on a line of its own


def test_an_unreachable_store_is_reported_at_once_and_the_points_are_written_at_the_end(cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    out = tmp_path / "job"
    with JobTracker.start(cfg) as tr:
        down = MlflowClient("http://127.0.0.1:9")  # nothing listens
        with relay_metrics(out, down, tr.run_id):
            sink = RelaySink(out, tr.run_id, timeout_s=30)
            sink.log({"loss": 0.5}, 1)
            t0 = time.monotonic()
            assert not sink.flush()  # the driver says it failed; the rank does not wait out its timeout
            assert time.monotonic() - t0 < 20
            assert (out / ACK_FILE).read_text().split()[1] == "failed"
            sink._file.close()
        assert _steps(tr.client, tr.run_id, "loss") == []


def test_a_driver_that_does_not_answer_times_the_flush_out(tmp_path):
    sink = RelaySink(tmp_path, "0" * 32, timeout_s=0.3)
    sink.log({"loss": 1.0}, 1)
    t0 = time.monotonic()
    assert not sink.flush()
    assert 0.3 <= time.monotonic() - t0 < 5
    sink._file.close()


def test_the_driver_starts_from_an_empty_relay(cfg, tmp_path):
    out = tmp_path / "job"
    out.mkdir()
    (out / RELAY_FILE).write_text(json.dumps({"s": 9, "t": 1, "m": {"loss": 9.0}}) + "\n")  # an earlier driver's
    (out / ACK_FILE).write_text("999 ok\n")
    with JobTracker.start(cfg) as tr:
        with relay_metrics(out, tr.client, tr.run_id):
            sink = RelaySink(out, tr.run_id)
            sink.log({"loss": 1.0}, 1)
            assert sink.flush()
            sink._file.close()
        assert _steps(tr.client, tr.run_id, "loss") == [1]


def test_points_queued_without_a_flush_are_written_when_the_group_ends(cfg, tmp_path):
    out = tmp_path / "job"
    with JobTracker.start(cfg) as tr:
        with relay_metrics(out, tr.client, tr.run_id):
            sink = RelaySink(out, tr.run_id)
            for step in range(1, 4):
                sink.log({"loss": float(step)}, step)
            sink._file.close()  # a rank that ends without a final flush
        assert _steps(tr.client, tr.run_id, "loss") == [1, 2, 3]

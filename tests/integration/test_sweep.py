"""``orchestrator run <kind> -m``: every point a finished run under one MLflow parent, and a comparison table."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_sweep_runs_every_point_under_one_parent(ray_local, tmp_path, capsys):
    from mlflow import MlflowClient

    from orchestrator.sweep import run_sweep

    res = run_sweep("pretrain", ["trainer.lr=1e-3,3e-4", "trainer.max_steps=3", "trainer.save_every=0",
                                 "trainer.export=false", "trainer.eval_batches=1", "cluster.num_workers=1",
                                 "trainer.global_batch_size=4", f"workspace={tmp_path}"])
    assert [r["status"] for r in res["points"]] == ["FINISHED", "FINISHED"]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    parent = client.get_run(res["parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["sweep"] == "pretrain"
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(float(c.data.params["trainer.lr"]) for c in children) == [3e-4, 1e-3]
    assert all(c.info.status == "FINISHED" and len(client.get_metric_history(c.info.run_id, "loss")) == 3
               for c in children)
    table = capsys.readouterr().out
    assert table.count("FINISHED") >= 2 and "trainer.lr=0.0003" in table and "eval_ppl=" in table

"""The pipeline run's overview artifacts: the stage table and the DAG picture coloured by status."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from mlflow import MlflowClient

from orchestrator.kinds import load
from orchestrator.pipeline.summary import (OVERVIEW_DAG, OVERVIEW_TABLE, STATUS_COLOURS, dag_levels, dag_svg,
                                           log_overview, overview_rows)
from orchestrator.tracking import NullTracker, job_run

SVG = "{http://www.w3.org/2000/svg}"

# what run_pipeline's rows look like after sft failed on a rerun (data_prep finished by an earlier run)
ROWS = [
    {"stage": "data_prep", "kind": "data_prep", "status": "SKIPPED", "duration_s": 0.0, "key_metric": "",
     "model_version": "", "run_id": ""},
    {"stage": "pretrain", "kind": "pretrain", "status": "FINISHED", "duration_s": 41.5,
     "key_metric": "eval_loss=4.12", "model_version": "pipeline-default-pretrain/1", "run_id": "r2"},
    {"stage": "sft", "kind": "sft", "status": "FAILED", "duration_s": 3.2, "key_metric": "", "model_version": "",
     "run_id": ""},
]
EXPECTED = {"data_prep": "SKIPPED", "pretrain": "FINISHED", "sft": "FAILED", "reward_model": "NOT_RUN", "ppo": "NOT_RUN"}


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    """One composed config for the module (composing costs seconds; one test writes to its store)."""
    return load("pipeline", [f"workspace={tmp_path_factory.mktemp('ws')}", "tracking.log_system_metrics=false"])


def stage_boxes(svg: str) -> dict[str, tuple[str, str, float]]:
    """stage -> (status, fill colour, x) read back from the picture."""
    root = ET.fromstring(svg)
    out = {}
    for g in root.iter(f"{SVG}g"):
        if g.get("class") == "stage":
            rect = g.find(f"{SVG}rect")
            out[g.get("data-stage")] = (g.get("data-status"), rect.get("fill"), float(rect.get("x")))
    return out


def test_every_stage_is_in_the_table_and_unreached_ones_are_not_run(cfg):
    rows = overview_rows(cfg.pipeline.stages, ROWS)
    assert [(r["stage"], r["status"]) for r in rows] == list(EXPECTED.items())
    assert rows[1]["model_version"] == "pipeline-default-pretrain/1" and rows[1]["key_metric"] == "eval_loss=4.12"
    assert rows[4]["duration_s"] == "" and rows[4]["kind"] == "ppo"


def test_dag_picture_colours_each_stage_by_status_and_follows_the_edges(cfg):
    stages = cfg.pipeline.stages
    assert dag_levels(stages) == {"data_prep": 0, "pretrain": 1, "sft": 2, "reward_model": 2, "ppo": 3}
    svg = dag_svg(stages, overview_rows(stages, ROWS), "pipeline default")
    boxes = stage_boxes(svg)
    assert {s: b[0] for s, b in boxes.items()} == EXPECTED
    for stage, (status, fill, _) in boxes.items():
        assert fill == STATUS_COLOURS[status], stage
    assert STATUS_COLOURS["FAILED"] == "#c62828" and STATUS_COLOURS["FINISHED"] == "#2e7d32"
    assert boxes["data_prep"][2] < boxes["pretrain"][2] < boxes["sft"][2] == boxes["reward_model"][2] < boxes["ppo"][2]
    edges = {(p.get("data-from"), p.get("data-to")) for p in ET.fromstring(svg).iter(f"{SVG}path")
             if p.get("class") == "edge"}
    assert edges == {(a, s.name) for s in stages for a in s.after}
    assert "eval_loss=4.12" in svg and "41.5s" in svg  # key metric and duration in the box


def test_overview_artifacts_land_in_the_pipeline_run(cfg):
    with job_run(cfg) as parent:
        path = log_overview(parent, cfg.pipeline.stages, ROWS, "pipeline default", cfg.output_dir)
        log_overview(parent, cfg.pipeline.stages, ROWS, "pipeline default", cfg.output_dir)  # a rerun replaces
    client = MlflowClient(cfg.tracking.uri)
    assert {OVERVIEW_TABLE, OVERVIEW_DAG} <= {a.path for a in client.list_artifacts(parent.run_id)}
    local = Path(client.download_artifacts(parent.run_id, OVERVIEW_TABLE, str(path.parent)))
    table = json.loads(local.read_text())
    assert table["columns"] == ["stage", "kind", "status", "duration_s", "key_metric", "model_version", "run_id"]
    assert [(r[0], r[2]) for r in table["data"]] == list(EXPECTED.items())  # five rows: not appended twice
    tags = json.loads(client.get_run(parent.run_id).data.tags["mlflow.loggedArtifacts"])
    assert {"path": OVERVIEW_TABLE, "type": "table"} in tags  # the UI shows it as a table
    svg = Path(client.download_artifacts(parent.run_id, OVERVIEW_DAG, str(path.parent / "dl"))).read_text()
    assert stage_boxes(svg)["sft"][1] == STATUS_COLOURS["FAILED"] and path.read_text() == svg


def test_tracking_off_still_draws_the_local_picture(tmp_path, cfg):
    path = log_overview(NullTracker(), cfg.pipeline.stages, ROWS[:1], "p", tmp_path)
    assert stage_boxes(path.read_text())["pretrain"][:2] == ("NOT_RUN", STATUS_COLOURS["NOT_RUN"])

"""Pure parts of the pipeline: completion markers, output wiring, summary."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.config import ConfigError
from orchestrator.kinds import load
from orchestrator.data.shards import write_packed_dataset, write_records_dataset
from orchestrator.pipeline.markers import read_valid_marker, tree_digest, write_marker
from orchestrator.pipeline.runner import stage_config
from orchestrator.pipeline.summary import format_summary, key_metric, mlflow_ui_hint
from orchestrator import kinds
from orchestrator.kinds.pipeline import Kinds
from orchestrator.pipeline.wiring import upstream_model_tag, wiring_overrides


def test_marker_valid_only_for_same_config_and_untouched_outputs(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "w.bin").write_bytes(b"abc")
    write_marker(tmp_path, config_hash="h1", outputs={"model": str(out)}, result={"loss": 1.0})
    assert read_valid_marker(tmp_path, "h1")["result"] == {"loss": 1.0}
    assert read_valid_marker(tmp_path, "h2") is None  # config changed
    d0 = tree_digest(out)
    (out / "w.bin").write_bytes(b"abd")
    assert tree_digest(out) != d0 and read_valid_marker(tmp_path, "h1") is None  # output tampered


def test_wiring_by_kind_and_dataset_format(tmp_path):
    pre = tmp_path / "pre"
    write_packed_dataset(pre, [np.zeros((1, 8), dtype=np.int64)], seq_len=8, vocab_size=16, eos_token_id=0)
    prefs = tmp_path / "prefs"
    write_records_dataset(prefs, "preference", [{"id": "1", "prompt": "p", "chosen": "a", "rejected": "b"}])
    dp = {"outputs": kinds.get("data_prep").outputs({"dataset_dir": str(pre)}, "x"), "result": {}}
    dp_pref = {"outputs": {"dataset": str(prefs)}, "result": {}}
    pt = {"outputs": kinds.get("pretrain").outputs({"export_dir": "/m/pt"}, "x"),
          "result": {"model_name": "pretrain", "model_version": "3"}}
    rm = {"outputs": {"model": "/m/rm"}, "result": {"model_name": "rm", "model_version": "1"}}
    k = kinds.get
    assert wiring_overrides(k("pretrain"), [(k("data_prep"), dp)]) == [f"data.path={pre}"]
    assert wiring_overrides(k("sft"), [(k("data_prep"), dp), (k("pretrain"), pt)]) == ["model.pretrained=/m/pt"]
    assert wiring_overrides(k("reward_model"), [(k("data_prep"), dp_pref)]) == [f"data.path={prefs}"]
    assert wiring_overrides(k("ppo"), [(k("pretrain"), pt), (k("reward_model"), rm)]) == [
        "model.pretrained=/m/pt", "ppo.reward_model=/m/rm"]
    tags = upstream_model_tag([(k("data_prep"), dp), (k("pretrain"), pt), (k("reward_model"), rm)])
    assert tags["upstream_model"] == "pretrain/3" and tags["upstream_reward_model"] == "rm/1"
    assert len(tags["upstream_dataset_digest"]) == 64


def test_stage_config_inherits_pipeline_settings(tmp_path):
    cfg = load("pipeline", [f"workspace={tmp_path}", "cluster.num_workers=1"])
    pre = next(s for s in cfg.pipeline.stages if s.kind == "pretrain")
    sc = stage_config(cfg, pre, ["trainer.max_steps=3"], Kinds, parent_run_id="abc", tags={"upstream_model": "x/1"})
    assert sc.output_dir == f"{cfg.output_dir}/pretrain" and sc.cluster.num_workers == 1
    assert sc.run_name == "pipeline-default-pretrain"
    assert sc.tracking.uri == cfg.tracking.uri and sc.tracking.parent_run_id == "abc"
    assert sc.tracking.tags["pipeline"] == "default" and sc.trainer.max_steps == 3
    with pytest.raises(ConfigError):
        stage_config(cfg, pre, ["parallel.zero_stage=9"], Kinds)


def test_summary_and_hint():
    s = {"pipeline": "default", "run_id": "r", "duration_s": 3.0, "stages": [
        {"stage": "pretrain", "kind": "pretrain", "status": "FINISHED", "duration_s": 2.0,
         "key_metric": key_metric(kinds.get("pretrain").key_metrics, {"metrics": {"eval_loss": 2.5}}), "model_version": "pretrain/1"}]}
    text = format_summary(s)
    assert "eval_loss=2.5" in text and "pretrain/1" in text and "FINISHED" in text
    assert mlflow_ui_hint("sqlite:////x/mlflow.db").startswith("Open the MLflow UI:  mlflow ui --backend-store-uri sqlite:////x")
    # links open MLflow's model-training view (its GenAI view is the default of a fresh browser)
    assert mlflow_ui_hint("sqlite:////x/mlflow.db", "3").endswith(
        "(then browse http://127.0.0.1:5000/#/experiments/3?workflowType=machine_learning)")
    assert mlflow_ui_hint("http://h:5000/", "3") == "MLflow UI: http://h:5000/#/experiments/3?workflowType=machine_learning"


def test_bad_stage_override_is_refused_when_the_pipeline_config_loads(tmp_path):
    with pytest.raises(ConfigError) as info:
        load("pipeline", [f"workspace={tmp_path}", "pipeline.stages.1.overrides=['parallel.zero_stage=9']"])
    assert info.value.key == "pipeline.stages[pretrain].parallel.zero_stage"
    # the wired inputs (data.path, model.pretrained, ppo.reward_model) are not required up front
    assert load("pipeline", [f"workspace={tmp_path}"]).pipeline.stages[-1].kind == "ppo"

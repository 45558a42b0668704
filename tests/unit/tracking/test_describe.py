"""Run descriptions: one sentence per run (kind, model, data, steps, lineage) in ``mlflow.note.content``."""

from __future__ import annotations

import dataclasses

from mlflow import MlflowClient

from orchestrator.kinds import load, names
from orchestrator.tracking import JobTracker
from orchestrator.tracking.describe import NOTE_TAG, describe_run


def test_every_kind_says_what_it_is_in_one_sentence(workspace):
    for kind in names():
        cfg = load(kind, [f"workspace={workspace}"])
        text = describe_run(cfg, dict(cfg.tracking.tags))
        assert text.startswith(f"{kind} run '{cfg.run_name}': ") and text.endswith(".") and "\n" not in text
        assert text.count(". ") == 0, text  # one sentence
    pretrain = describe_run(load("pretrain", [f"workspace={workspace}", "trainer.max_steps=7", "trainer.lr=1e-3"]), {})
    assert pretrain == ("pretrain run 'pretrain': trains a new 0.14M-parameter llama (2 layers x 64) on the built-in "
                        "demo data for 7 steps (global batch 8, lr 0.001).")
    prep = describe_run(load("data_prep", [f"workspace={workspace}", "data.format=sft"]), {})
    assert prep == "data_prep run 'data_prep': turns the generated demo corpus into a sft dataset (seq_len 64)."
    pipe = describe_run(load("pipeline", [f"workspace={workspace}", "pipeline=dpo"]), {"pipeline": "dpo"})
    assert pipe == ("pipeline run 'pipeline-dpo': runs the 4 stages of pipeline 'dpo' (data_prep -> pretrain -> sft -> dpo), "
                    "each as a child run.")


def test_stage_and_sweep_runs_name_their_lineage(workspace):
    cfg = load("sft", [f"workspace={workspace}", "run_name=pipeline-default-sft"])
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, path="/d/dataset"),
                              tracking=dataclasses.replace(cfg.tracking, parent_run_id="abc123"))
    tags = {"pipeline": "default", "pipeline_stage": "sft", "upstream_model": "pipeline-default-pretrain/1",
            "upstream_dataset_digest": "0123456789abcdef0123"}
    assert describe_run(cfg, tags) == (
        "sft run 'pipeline-default-sft': trains model version pipeline-default-pretrain/1 on /d/dataset for 20 steps "
        "(global batch 8, lr 0.003); stage 'sft' of pipeline 'default'; data digest 0123456789ab; child of run abc123.")
    parent = load("pretrain", [f"workspace={workspace}", "run_name=pretrain-sweep-1a2b"])
    assert describe_run(parent, {"sweep": "pretrain", "sweep_points": "2"}).startswith(
        "pretrain sweep run 'pretrain-sweep-1a2b': runs 2 pretrain sweep points one after the other, each as a child run")
    point = load("pretrain", [f"workspace={workspace}", "run_name=pretrain-lr_0.001", "trainer.lr=1e-3"])
    assert "; sweep point 'trainer.lr=1e-3'." in describe_run(point, {"sweep_point": "trainer.lr=1e-3"})


def test_the_description_is_the_runs_note_in_mlflow(workspace):
    cfg = load("pretrain", [f"workspace={workspace}", "run_name=noted", "trainer.max_steps=3",
                            "tracking.log_system_metrics=false", "+tracking.tags.pipeline_stage=pretrain",
                            "+tracking.tags.pipeline=p"])
    with JobTracker.start(cfg) as tracker:
        pass
    note = MlflowClient(cfg.tracking.uri).get_run(tracker.run_id).data.tags[NOTE_TAG]
    assert note.startswith("pretrain run 'noted': trains a new") and "for 3 steps" in note
    assert note.endswith("; stage 'pretrain' of pipeline 'p'.")

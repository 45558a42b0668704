"""``data.task``: the generated verifiable tasks (fruit, arithmetic) behind data_prep's demo records and
the records jobs' ``data.path=null``."""

from __future__ import annotations

import json

import pytest

from orchestrator.config import ConfigError
from orchestrator.config.data_prep import DataPrepDataConfig
from orchestrator.data import arithmetic, task
from orchestrator.data.inputs import demo_record_lines, ensure_demo_input


def test_task_modules_share_one_layout():
    assert task.task_module("fruit") is task and task.task_module("arithmetic") is arithmetic
    for name in ("fruit", "arithmetic"):
        m = task.task_module(name)
        recs = m.records("prompts", 5, 0)
        assert len(recs) == 5 and all(r["prompt"] for r in recs)
        assert m.score_texts([recs[0]["prompt"]], ["nothing"]) == [0.0]
        assert next(iter(m.tokenizer_corpus()))
    with pytest.raises(ValueError, match="unknown generated task"):
        task.task_module("chess")


def test_data_prep_demo_records_follow_data_task(tmp_path):
    lines = list(demo_record_lines("sft", 100, task="arithmetic"))
    good = [r for r in lines if isinstance(r, dict) and "response" in r and "prompt" in r]
    assert len(good) >= 100 and all(arithmetic.answer_of(r["prompt"]) is not None for r in good)
    assert sum(not isinstance(r, dict) or "prompt" not in r for r in lines) == 3  # the planted malformed lines
    path = ensure_demo_input(tmp_path, DataPrepDataConfig(format="prompts", task="arithmetic", demo_num_docs=50))
    first = next(json.loads(ln) for ln in path.read_text(errors="replace").splitlines() if ln.startswith('{"id": "arith'))
    assert first["answer"] == str(arithmetic.answer_of(first["prompt"]))
    fruit = ensure_demo_input(tmp_path, DataPrepDataConfig(format="prompts", demo_num_docs=50))
    assert fruit != path and "list" in fruit.read_text(errors="replace")


def test_records_jobs_build_the_arithmetic_dataset_when_asked(tmp_path):
    from orchestrator.data.shards import load_manifest, read_records

    d = task.ensure_task_dataset(tmp_path, "prompts", num_records=30, seed=0, task="arithmetic")
    recs = read_records(d)
    assert len(recs) == 30 and all(arithmetic.answer_of(r["prompt"]) == int(r["answer"]) for r in recs)
    assert load_manifest(d)["source"]["generator"] == "orchestrator.data.arithmetic"
    assert task.ensure_task_dataset(tmp_path, "prompts", num_records=30, seed=0) != d  # fruit has its own


@pytest.mark.parametrize("build", [lambda: DataPrepDataConfig(task="chess"),
                                   lambda: __import__("orchestrator.config.data", fromlist=["x"]).TrainDataConfig(
                                       task="chess")])
def test_unknown_task_is_refused_naming_the_key(build):
    with pytest.raises(ConfigError) as err:
        build()
    assert err.value.key == "data.task"

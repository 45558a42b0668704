"""Reward functions as code: loading, field passing, weights, concurrency, and errors that name the culprit."""

from __future__ import annotations

import textwrap
import threading

import pytest

from orchestrator.data import arithmetic, task
from orchestrator.rlhf.reward_functions import (arithmetic_reward, exact_match_reward, final_number_reward,
                                                fruit_reward)
from orchestrator.rlhf.rewards import RewardFunctionError, RewardScorer, load_reward_function

USER_FUNCTIONS = '''
import math, threading
GATE = threading.Event()
BARRIER = threading.Barrier(2, timeout=5)

def length(prompts, completions):
    return [float(len(c)) for c in completions]

def has_answer(prompts, completions, answer):
    return [float(a in c) for c, a in zip(completions, answer)]

def sees_all(prompts, completions, **fields):
    return [float(len(fields)) for _ in completions]

def raises_on_bad(prompts, completions):
    return [1.0 / (c != "bad") for c in completions]

def fails_on_batches(prompts, completions):
    if len(completions) > 1:
        raise RuntimeError("batch too big")
    return [1.0]

def wrong_length(prompts, completions):
    return [1.0]

def nan_on_bad(prompts, completions):
    return [math.nan if c == "bad" else 1.0 for c in completions]

def none_on_bad(prompts, completions):
    return [None if c == "bad" else 1.0 for c in completions]

def hangs(prompts, completions):
    GATE.wait(10)
    return [0.0 for _ in completions]

def meet_a(prompts, completions):
    BARRIER.wait()
    return [1.0 for _ in completions]

def meet_b(prompts, completions):
    BARRIER.wait()
    return [2.0 for _ in completions]

not_a_function = 3

def one_arg(prompts):
    return []
'''

RECORDS = [{"id": "p-0", "answer": "ab"}, {"id": "p-1", "answer": "zz"}, {"id": "p-2", "answer": "c"}]
PROMPTS = ["q0", "q1", "q2"]


@pytest.fixture()
def user_file(tmp_path):
    path = tmp_path / "my_rewards.py"
    path.write_text(textwrap.dedent(USER_FUNCTIONS))
    return path


def load(user_file, name, **kw):
    return load_reward_function(f"{user_file}:{name}", **kw)


def test_module_and_file_forms_with_weights_and_fields(user_file, tmp_path):
    scorer = RewardScorer([
        load_reward_function("orchestrator.rlhf.reward_functions:exact_match_reward", weight=2.0),
        load_reward_function("my_rewards.py:has_answer", base_dir=tmp_path, name="contains"),
        load(user_file, "length", weight=0.5),
        load(user_file, "sees_all"),
    ])
    res = scorer(PROMPTS, ["ab", "xyz", "c!"], RECORDS)
    assert res.per_function == {"exact_match_reward": [1.0, 0.0, 0.0], "contains": [1.0, 0.0, 1.0],
                                "length": [2.0, 3.0, 2.0], "sees_all": [2.0, 2.0, 2.0]}  # fields: id, answer
    assert res.total == [2.0 + 1.0 + 1.0 + 2.0, 0.0 + 0.0 + 1.5 + 2.0, 0.0 + 1.0 + 1.0 + 2.0]
    assert res.metrics()["reward/total"] == pytest.approx((6.0 + 3.5 + 4.0) / 3) and res.num_errors == {}


@pytest.mark.parametrize("spec,problem", [
    ("no_colon", "is not 'package.module:function'"),
    ("orchestrator.rlhf.nope:f", "cannot import orchestrator.rlhf.nope: ModuleNotFoundError"),
    ("orchestrator.rlhf.reward_functions:nope", "has no function 'nope'"),
    ("missing/file.py:f", "does not exist"),
])
def test_bad_specs_are_refused(spec, problem):
    with pytest.raises(RewardFunctionError, match=problem) as info:
        load_reward_function(spec)
    assert spec in str(info.value)


def test_bad_callables_are_refused(user_file):
    with pytest.raises(RewardFunctionError, match="has no function 'not_a_function'"):
        load(user_file, "not_a_function")
    with pytest.raises(RewardFunctionError, match=r"must accept \(prompts, completions"):
        load(user_file, "one_arg")


def test_a_missing_record_field_is_named(user_file):
    with pytest.raises(RewardFunctionError, match=r"has_answer on a batch of 2 records.*needs record field\(s\) \['answer'\]"):
        RewardScorer([load(user_file, "has_answer")])(["a", "b"], ["x", "y"], [{"id": 1}, {"id": 2}])


@pytest.mark.parametrize("name,record,problem", [
    ("raises_on_bad", r"record 1 \(id=p-1\)", r"raised ZeroDivisionError: float division by zero \(at my_rewards.py:\d+\)"),
    ("nan_on_bad", r"record 1 \(id=p-1\)", "returned nan, not a finite number"),
    ("none_on_bad", r"record 1 \(id=p-1\)", "returned None, not a number"),
    ("wrong_length", r"a batch of 3 records \(ids p-0, p-1, p-2\)", "returned 1 scores for 3 completions"),
    ("fails_on_batches", r"a batch of 3 records \(ids p-0, p-1, p-2\)", "raised RuntimeError: batch too big .* no record fails alone"),
])
def test_failures_name_the_function_and_the_record(user_file, name, record, problem):
    with pytest.raises(RewardFunctionError, match=f"reward function .*my_rewards.py:{name} on {record}: {problem}"):
        RewardScorer([load(user_file, name)])(PROMPTS, ["ok", "bad", "ok"], RECORDS)


@pytest.mark.parametrize("name,scores,errors", [
    ("raises_on_bad", [1.0, 0.0, 1.0], 1),
    ("nan_on_bad", [1.0, 0.0, 1.0], 1),
    ("wrong_length", [0.0, 0.0, 0.0], 3),
])
def test_on_error_zero_scores_zero_and_counts(user_file, name, scores, errors):
    scorer = RewardScorer([load(user_file, name), load(user_file, "length")], on_error="zero")
    res = scorer(PROMPTS, ["ok", "bad", "ok"], RECORDS)
    assert res.per_function[name] == scores and res.num_errors == {name: errors}
    assert res.total == [s + 2.0 if i != 1 else s + 3.0 for i, s in enumerate(scores)]
    assert res.metrics()[f"reward_errors/{name}"] == errors and name in res.errors[0]


def test_timeout_names_the_function_and_does_not_block(user_file):
    hang = load(user_file, "hangs")
    try:
        with pytest.raises(RewardFunctionError, match=r"hangs on a batch of 3 records .*timed out after 0.2 s"):
            RewardScorer([hang], timeout_s=0.2)(PROMPTS, ["a", "b", "c"], RECORDS)
        res = RewardScorer([hang, load(user_file, "length")], on_error="zero", timeout_s=0.2)(
            PROMPTS, ["a", "b", "c"], RECORDS)
        assert res.per_function["hangs"] == [0.0, 0.0, 0.0] and res.num_errors == {"hangs": 3}
        assert res.per_function["length"] == [1.0, 1.0, 1.0]
    finally:
        hang.fn.__globals__["GATE"].set()


def test_functions_run_concurrently(user_file):
    # each waits at a two-party barrier: run one after the other, the first would time out
    res = RewardScorer([load(user_file, "meet_a"), load(user_file, "meet_b")], timeout_s=5)(["p"], ["c"])
    assert res.total == [3.0]


def test_builtin_rewards():
    prompts = ["list 2 fruit:", "list 3 color:"]
    completions = [" apple dog", " red blue green"]
    assert fruit_reward(prompts, completions) == [task.score(p, c) for p, c in zip(prompts, completions)] == [0.5, 1.0]
    assert arithmetic_reward(["compute 7-9:", "compute 3+4:", "hello"], [" -2", " it is 8", " 1"]) == [1.0, 0.0, 0.0]
    assert final_number_reward([""] * 4, ["so 1,000", "x = 19.0", "none", "-3"],
                               answer=["1000", 19, "5", "3"]) == [1.0, 1.0, 0.0, 0.0]
    assert exact_match_reward(["", ""], [" Paris\n", "paris"], answer=["Paris", "Paris"]) == [1.0, 0.0]


def test_arithmetic_task_records_are_consistent():
    for rec in arithmetic.prompt_records(20, seed=1):
        assert str(arithmetic.answer_of(rec["prompt"])) == rec["answer"]
    sft = arithmetic.sft_records(400, seed=0)
    pass_rate = sum(arithmetic.score(r["prompt"], r["response"]) for r in sft) / len(sft)
    assert 0.4 < pass_rate < 0.6          # mediocre demonstrations: headroom for RL
    for rec in arithmetic.preference_records(20, seed=2):
        assert arithmetic.score(rec["prompt"], rec["chosen"]) == 1.0
        assert arithmetic.score(rec["prompt"], rec["rejected"]) == 0.0
    assert arithmetic.final_number("no digits") is None and arithmetic.final_number("+5 then -7.5") == "-7.5"
    assert arithmetic.sft_records(3, 5) == arithmetic.sft_records(3, 5)


def test_reward_function_error_survives_pickling():
    """It is raised in the reward role's process and re-raised in the driver by Ray."""
    import pickle

    err = pickle.loads(pickle.dumps(RewardFunctionError("m.py:f", "raised ValueError: boom", "record 3")))
    assert (err.function, err.problem, err.record) == ("m.py:f", "raised ValueError: boom", "record 3")
    assert str(err) == "reward function m.py:f on record 3: raised ValueError: boom"

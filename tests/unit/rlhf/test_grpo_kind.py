"""The ``grpo`` kind before Ray (checks naming the key, the dry-run plan) and its pure group-rollout helpers."""

from __future__ import annotations

import pytest
import torch

from orchestrator import kinds
from orchestrator.config import ConfigError
from orchestrator.rlhf.groups import (SampledGroup, choose_groups, concat_responses, pass_rate, repeat_rows,
                                      response_stats, round_seed, split_groups)


def load(*overrides: str):
    return kinds.load("grpo", ["workspace=/tmp/grpo_unit_ws", *overrides])


def test_plan_counts_completions_roles_and_updates():
    plan = kinds.plan(load("grpo.rollout_batch_size=4", "grpo.group_size=8", "grpo.minibatch_size=16",
                           "parallel.micro_batch_size=8", "trainer.max_steps=10", "grpo.num_epochs=2"))
    assert (plan["prompts_per_step"], plan["samples_per_step"]) == (4, 32)
    assert (plan["optimizer_steps_per_step"], plan["grad_accum_steps"], plan["total_optimizer_steps"]) == (4, 2, 40)
    assert set(plan["roles"]) == {"actor", "reference", "reward"}
    assert plan["placement_bundles"] == [{"CPU": 0.75}]


def test_kl_off_starts_no_reference_role():
    plan = kinds.plan(load("grpo.kl_coef=0", "grpo.colocate=false"))
    assert set(plan["roles"]) == {"actor", "reward"} and plan["kl"].startswith("off")
    assert plan["placement_bundles"] == [{"CPU": 0.25}, {"CPU": 0.25}]


@pytest.mark.parametrize("overrides,key", [
    (("reward.functions=[{function: 'no_such_pkg.mod:f'}]",), "reward.functions[0]"),
    (("reward.functions=[{function: 'orchestrator.rlhf.reward_functions:fruit_reward'},"
      "{function: 'orchestrator.rlhf.reward_functions:missing'}]",), "reward.functions[1]"),
    (("reward.functions=[{function: '/nonexistent/rewards.py:score'}]",), "reward.functions[0]"),
    (("grpo.minibatch_size=32", "parallel.micro_batch_size=12"), "grpo.minibatch_size"),
    (("grpo.max_new_tokens=200",), "grpo.max_new_tokens"),
    (("parallel=zero3",), "parallel.zero_stage"),
])
def test_checks_name_the_key(overrides, key):
    with pytest.raises(ConfigError) as err:
        load(*overrides)
    assert err.value.key == key


def test_loss_norm_length_without_its_aggregation_warns(caplog):
    load("grpo.loss_norm_length=16")
    assert "loss_norm_length=16 is ignored" in caplog.text


def test_reward_function_file_is_loaded_at_check_time(tmp_path):
    f = tmp_path / "my_rewards.py"
    f.write_text("def score(prompts, completions, **fields):\n    return [1.0] * len(completions)\n")
    cfg = load(f"reward.functions=[{{function: '{f}:score', weight: 2.0}}]")
    assert kinds.plan(cfg)["reward"] == [f"score=2 x {f}:score"]


def test_repeat_rows_and_round_seeds():
    assert repeat_rows(["a", "b"], 3) == ["a", "a", "a", "b", "b", "b"]
    seeds = {round_seed(7, step, r) for step in range(1, 4) for r in range(3)}
    assert len(seeds) == 9 and round_seed(7, 2, 1) == round_seed(7, 2, 1)


def _groups() -> list[SampledGroup]:
    records = [{"prompt": "p0"}, {"prompt": "p1"}, {"prompt": "p2"}]
    responses = torch.arange(12).reshape(6, 2)
    scores = torch.tensor([1.0, 0.0, 0.5, 0.5, 1.0, 1.0])
    return split_groups(records, responses, scores, {"f": scores * 2}, group_size=2)


def test_split_groups_cuts_rows_and_flags_informative_groups():
    g = _groups()
    assert [x.record["prompt"] for x in g] == ["p0", "p1", "p2"]
    assert [x.informative for x in g] == [True, False, False]
    assert torch.equal(g[1].responses, torch.tensor([[4, 5], [6, 7]]))
    assert torch.equal(g[0].per_function["f"], torch.tensor([2.0, 0.0]))


def test_choose_groups_fills_a_shortfall_with_uninformative_groups_in_order():
    g = _groups()
    assert choose_groups([g[0]], g, 2) == [g[0], g[1]]
    assert choose_groups([g[0], g[2]], g, 2) == [g[0], g[2]]
    assert choose_groups(g, g, 2) == g[:2]


def test_concat_responses_pads_shorter_rounds_after_their_eos():
    short = SampledGroup({}, torch.tensor([[5, 2], [2, 0]]), torch.zeros(2), {}, True)
    long = SampledGroup({}, torch.tensor([[5, 6, 7], [5, 2, 0]]), torch.zeros(2), {}, True)
    assert concat_responses([short, long], pad_id=0).tolist() == [[5, 2, 0], [2, 0, 0], [5, 6, 7], [5, 2, 0]]


def test_response_stats_and_pass_rate():
    responses = torch.tensor([[5, 2, 0], [5, 6, 7], [2, 0, 0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 0, 0]]).float()
    st = response_stats(mask, responses, eos_id=2, max_new_tokens=3)
    assert st == {"response_length": 2.0, "response_length_max": 3.0, "truncation_rate": pytest.approx(1 / 3)}
    assert pass_rate({"a": torch.tensor([1.0, 1.0, 0.0]), "b": torch.tensor([1.0, 0.5, 1.0])}) == pytest.approx(1 / 3)


def test_held_out_evaluation_scores_fixed_draws_of_the_eval_prompts(tmp_path, monkeypatch):
    """``evaluate``: each held-out prompt ``eval_samples_per_prompt`` times, in chunks of one training round,
    with the same seeds at every evaluation; the pass rate counts completions every function scored >= 1."""
    import ray

    from orchestrator.data.task import ensure_task_dataset
    from orchestrator.rlhf.grpo import GRPOController

    tok_dir = ensure_task_dataset(tmp_path, "prompts", num_records=20, seed=0) / "tokenizer"
    cfg = kinds.load("grpo", [f"workspace={tmp_path}", "grpo.rollout_batch_size=2", "grpo.group_size=2",
                              "grpo.minibatch_size=4", "parallel.micro_batch_size=4", "grpo.eval_samples_per_prompt=2"])
    evals = [{"id": f"e{i}", "prompt": "list 2 fruit:"} for i in range(3)]
    ctl = GRPOController(cfg, policy_dir="unused", reward_dir=None, tokenizer_dir=str(tok_dir), records=evals,
                         tracker=None, env={}, eval_records=evals)
    seeds, scored_ids = [], []

    def generate(prompts, seed, eos_id, pad_id):
        seeds.append(seed)
        return torch.full((prompts["input_ids"].shape[0], 2), eos_id)

    def score(batch, records):
        scored_ids.extend(r["id"] for r in records)
        s = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0][len(scored_ids) - len(records):len(scored_ids)])
        return {"total": s, "functions_total": s, "per_function": {"fruit_reward": s}, "num_errors": {}, "errors": []}

    def group(method, fn):
        return type("G", (), {"workers": [type("W", (), {method: type("R", (), {"remote": staticmethod(fn)})})()],
                              "__len__": lambda self: 1})()
    ctl.groups = {"actor": group("generate", generate), "reward": group("score", score)}
    monkeypatch.setattr(ray, "get", lambda refs: refs)
    assert ctl.evaluate(step=1) == {"eval_reward_mean": 0.5, "eval_pass_rate": 0.5}
    assert scored_ids == ["e0", "e0", "e1", "e1", "e2", "e2"] and len(seeds) == 2  # 6 completions, chunks of 4
    scored_ids.clear()
    ctl.evaluate(step=7)
    assert seeds[2:] == seeds[:2]  # the same draws at every evaluation


@pytest.mark.parametrize("overrides,key", [(("grpo.num_eval_prompts=-1",), "grpo.num_eval_prompts"),
                                           (("grpo.eval_samples_per_prompt=0",), "grpo.eval_samples_per_prompt")])
def test_eval_options_are_checked(overrides, key):
    with pytest.raises(ConfigError) as err:
        load(*overrides)
    assert err.value.key == key


def test_rlvr_pipeline_preset_runs_grpo_on_the_arithmetic_task():
    cfg = kinds.load("pipeline", ["pipeline=rlvr", "workspace=/tmp/grpo_unit_ws"])
    stages = {s.name: s for s in cfg.pipeline.stages}
    assert [s.kind for s in cfg.pipeline.stages] == ["data_prep", "pretrain", "sft", "grpo"]
    sft = kinds.load("sft", ["workspace=/tmp/grpo_unit_ws", *stages["sft"].overrides])
    grpo = kinds.load("grpo", ["workspace=/tmp/grpo_unit_ws", *stages["grpo"].overrides])
    assert sft.data.task == grpo.data.task == "arithmetic"
    assert [f.function for f in grpo.reward.functions] == ["orchestrator.rlhf.reward_functions:arithmetic_reward"]

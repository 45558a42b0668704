"""Post-training settings are refused before Ray starts, naming the key and the fix."""

from __future__ import annotations

import pytest

from orchestrator.config import ConfigError
from orchestrator.kinds import load


@pytest.mark.parametrize("kind,overrides,key", [
    ("ppo", ["parallel=zero3"], "parallel.zero_stage"),
    ("ppo", ["parallel=tp2"], "parallel.tensor_parallel"),
    ("ppo", ["ppo.minibatch_size=5"], "ppo.minibatch_size"),
    ("ppo", ["ppo.minibatch_size=16", "parallel.micro_batch_size=3"], "ppo.minibatch_size"),
    ("ppo", ["ppo.minibatch_size=16", "parallel.micro_batch_size=4", "ppo.critic.num_workers=3"], "ppo.minibatch_size"),
    ("ppo", ["ppo.kl_kind=k9"], "ppo.kl_kind"),
    ("ppo", ["ppo.kl_controller=pid"], "ppo.kl_controller"),
    ("ppo", ["ppo.top_p=0"], "ppo.top_p"),
    ("ppo", ["ppo.max_new_tokens=64"], "ppo.max_new_tokens"),
    ("ppo", ["reward.functions=[{function: nocolon}]"], "reward.functions.function"),
    ("ppo", ["reward.functions=[]"], "reward.functions"),  # no reward model and no function: no reward
    ("ppo", ["reward.functions=[{function: 'no_such_pkg.mod:f'}]"], "reward.functions[0]"),
    ("ppo", ["reward.on_error=skip"], "reward.on_error"),
    ("ppo", ["ppo.actor.num_workers=0"], "ppo.<role>.num_workers"),
    ("dpo", ["dpo.label_smoothing=0.7"], "dpo.label_smoothing"),
    ("sft", ["sft.max_prompt_tokens=0"], "sft.max_prompt_tokens"),
    ("sft", ["sft.lora_rank=-1"], "sft.lora_rank"),
    ("sft", ["sft.lora_rank=8", "parallel=zero3"], "sft.lora_rank"),
    ("sft", ["sft.packing=true", "model=tiny_gpt2"], "sft.packing"),
])
def test_invalid_post_training_configs(kind, overrides, key):
    with pytest.raises(ConfigError) as info:
        load(kind, overrides)
    assert info.value.key == key and "fix:" in str(info.value)


def test_ppo_defaults_are_explicit_and_consistent():
    cfg = load("ppo")
    p = cfg.ppo
    assert (p.kl_kind, p.kl_controller, p.temperature, p.top_p, p.gamma) == ("k1", "fixed", 1.0, 1.0, 1.0)
    assert p.rollout_batch_size % p.minibatch_size == 0
    # PPO does not use trainer.global_batch_size: any value composes
    assert load("ppo", ["trainer.global_batch_size=3"]).trainer.global_batch_size == 3


def test_ppo_dry_run_plan_shows_roles_and_update_arithmetic():
    from orchestrator.kinds import plan as make_plan

    plan = make_plan(load("ppo", ["trainer.max_steps=10", "ppo.actor.num_workers=2"]))
    assert plan["roles"]["actor"]["num_workers"] == 2 and plan["placement_strategy"] == "STRICT_PACK"
    assert plan["optimizer_steps_per_ppo_step"] == 2 * (32 // 16) and plan["total_optimizer_steps"] == 40
    assert plan["grad_accum_steps"] == {"actor": 1, "critic": 2}  # micro-batch 8 from conf/ppo.yaml


def test_ppo_takes_reward_functions_or_a_reward_model(tmp_path):
    from orchestrator.kinds import plan as make_plan

    f = tmp_path / "my_rewards.py"
    f.write_text("def score(prompts, completions, answer):\n    return [1.0] * len(completions)\n")
    cfg = load("ppo", [f"reward.functions=[{{function: '{f}:score', weight: 2.0}}]", "reward.on_error=zero"])
    assert cfg.ppo.reward_model is None and cfg.reward.on_error == "zero"
    assert make_plan(cfg)["reward"] == [f"score=2 x {f}:score"]
    default = load("ppo")  # the fruit task's function, as grpo's default
    assert [r.function for r in default.reward.functions] == ["orchestrator.rlhf.reward_functions:fruit_reward"]
    with_model = load("ppo", ["reward.functions=[]", "ppo.reward_model=/models/rm"])  # the model alone is a reward
    assert make_plan(with_model)["reward"] == "/models/rm"
    with pytest.raises(ConfigError, match="no reward: no functions and no ppo.reward_model"):
        load("ppo", ["reward.functions=[]"])

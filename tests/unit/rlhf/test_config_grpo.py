"""grpo and reward-function options: bad values refused naming the key and the fix; tables agree with the code."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from orchestrator.config import ConfigError
from orchestrator.config.rlhf import (ADVANTAGE_MIN_GROUP, LOSS_AGGS, REWARD_ON_ERROR, GRPOOptions, RewardConfig,
                                      RewardFunctionConfig)
from orchestrator.rlhf.advantages import ADVANTAGE_ESTIMATORS
from orchestrator.rlhf.losses import LOSS_AGGREGATIONS
from orchestrator.rlhf.rewards import ON_ERROR_CHOICES


def test_config_tables_match_the_registries():
    assert ADVANTAGE_MIN_GROUP == {k: e.min_group_size for k, e in ADVANTAGE_ESTIMATORS.items()}
    assert set(LOSS_AGGS) == set(LOSS_AGGREGATIONS) and REWARD_ON_ERROR == ON_ERROR_CHOICES


def test_defaults_follow_the_papers():
    g = GRPOOptions()
    assert (g.advantage, g.loss_agg, g.clip_low, g.clip_high, g.kl_coef, g.kl_mode, g.kl_kind) == \
        ("grpo", "token_mean", 0.2, 0.28, 0.04, "loss", "k3")
    assert (g.group_size, g.num_epochs, g.dynamic_sampling, g.overlong_buffer) == (8, 1, False, 0)
    r = RewardConfig()
    assert [f.function for f in r.functions] == ["orchestrator.rlhf.reward_functions:fruit_reward"]
    assert (r.on_error, r.timeout_s) == ("raise", 30.0)


@pytest.mark.parametrize("kwargs,key,problem", [
    ({"group_size": 1}, "grpo.group_size", "advantage grpo needs >= 2 samples per prompt"),
    ({"group_size": 1, "advantage": "rloo"}, "grpo.group_size", "advantage rloo needs >= 2"),
    ({"group_size": 1, "advantage": "dr_grpo"}, "grpo.group_size", "advantage dr_grpo needs >= 2"),
    ({"group_size": 1, "advantage": "reinforce_pp_baseline"}, "grpo.group_size", "needs >= 2"),
    ({"group_size": 1, "advantage": "reinforce_pp", "minibatch_size": 8, "dynamic_sampling": True},
     "grpo.dynamic_sampling", "a group of 1 always has equal rewards"),
    ({"group_size": 0}, "grpo.group_size", "must be >= 1"),
    ({"advantage": "gae"}, "grpo.advantage", "unknown estimator 'gae'"),
    ({"loss_agg": "sum"}, "grpo.loss_agg", "unknown aggregation 'sum'"),
    ({"clip_low": 0.0}, "grpo.clip_low", "must be in (0, 1)"),
    ({"clip_high": 0.1}, "grpo.clip_high", "below clip_low=0.2"),
    ({"kl_coef": -0.1}, "grpo.kl_coef", "must be >= 0"),
    ({"kl_mode": "off"}, "grpo.kl_mode", "unknown 'off'"),
    ({"kl_kind": "k4"}, "grpo.kl_kind", "unknown estimator 'k4'"),
    ({"minibatch_size": 24}, "grpo.minibatch_size", "24 does not divide rollout_batch_size x group_size = 64"),
    ({"overlong_buffer": 12}, "grpo.overlong_buffer", "must be in [0, max_new_tokens=12)"),
    ({"max_refills": -1}, "grpo.max_refills", "must be >= 0"),
    ({"loss_norm_length": 0}, "grpo.loss_norm_length", "must be >= 1"),
    ({"top_p": 0.0}, "grpo.top_p", "must be in (0, 1]"),
])
def test_bad_grpo_options_are_refused(kwargs, key, problem):
    with pytest.raises(ConfigError) as info:
        GRPOOptions(**kwargs)
    assert info.value.key == key and problem in info.value.problem and info.value.fix


def test_reinforce_pp_accepts_a_group_of_one():
    assert GRPOOptions(group_size=1, advantage="reinforce_pp", minibatch_size=8).group_size == 1


@pytest.mark.parametrize("build,key,problem", [
    (lambda: RewardFunctionConfig("no_colon"), "reward.functions.function", "is not module:function"),
    (lambda: RewardFunctionConfig("mod:not-an-identifier"), "reward.functions.function", "is not module:function"),
    (lambda: RewardFunctionConfig("a.b:f", weight=float("nan")), "reward.functions.weight", "not finite"),
    (lambda: RewardConfig(functions=[]), "reward.functions", "no reward"),
    (lambda: RewardConfig(functions=[RewardFunctionConfig("a:f"), RewardFunctionConfig("b.py:f")]),
     "reward.functions", "duplicate function names ['f']"),
    (lambda: RewardConfig(on_error="ignore"), "reward.on_error", "unknown 'ignore'"),
    (lambda: RewardConfig(timeout_s=0), "reward.timeout_s", "must be positive"),
])
def test_bad_reward_configs_are_refused(build, key, problem):
    with pytest.raises(ConfigError) as info:
        build()
    assert info.value.key == key and problem in info.value.problem


def test_reward_functions_compose_from_a_hydra_style_override():
    base = OmegaConf.structured(RewardConfig)
    override = OmegaConf.from_dotlist(["functions=[{function: my_rewards.py:score, weight: 0.5}, "
                                       "{function: 'orchestrator.rlhf.reward_functions:arithmetic_reward'}]"])
    cfg = OmegaConf.to_object(OmegaConf.merge(base, override))
    assert [(f.metric_name, f.weight) for f in cfg.functions] == [("score", 0.5), ("arithmetic_reward", 1.0)]
    assert RewardConfig(functions=[], model="outputs/reward_model/export").model
    assert RewardConfig(functions=[RewardFunctionConfig("a:f", name="g"), RewardFunctionConfig("b:f")]).functions

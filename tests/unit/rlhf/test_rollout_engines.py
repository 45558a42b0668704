"""``rollout.*``: config refusals before Ray, the mismatch/TIS math, the version check (no vLLM needed)."""

from __future__ import annotations

import math

import pytest
import torch

from orchestrator.config import ConfigError
from orchestrator.kinds import load


@pytest.fixture
def vllm_installed(monkeypatch):
    monkeypatch.setattr("orchestrator.config.rollout.vllm_available", lambda: True)


@pytest.mark.parametrize("overrides,key,words", [
    (["rollout.engine=sglang"], "rollout.engine", "unknown engine"),
    (["rollout.layout=remote"], "rollout.layout", "unknown layout"),
    (["rollout.tis_cap=0.5"], "rollout.tis_cap", "cap >= 1"),
    (["rollout.gpu_memory_utilization=0"], "rollout.gpu_memory_utilization", "(0, 1]"),
    (["rollout.engine=vllm", "model=tiny"], "rollout.engine", "model=tiny_h32"),  # head_dim 16 on CPU
    (["rollout.layout=separate"], "rollout.layout", "rollout.engine=vllm"),  # hf has no engines to separate
    (["rollout.engine=vllm", "model=tiny", "rollout.layout=separate"], "rollout.engine", "model=tiny_h32"),
    (["rollout.engine=vllm", "model=tiny_h32", "rollout.layout=separate", "rollout.num_engines=0"],
     "rollout.num_engines", ">= 1"),
    (["rollout.engine=vllm", "model=tiny_h32", "rollout.layout=separate", "rollout.cpus_per_engine=0"],
     "rollout.cpus_per_engine", "> 0"),
    # 2 engines x 1.5 CPUs beside the roles' CPUs do not fit a 2-CPU local Ray
    (["rollout.engine=vllm", "model=tiny_h32", "rollout.layout=separate", "cluster.num_cpus=2",
      "rollout.num_engines=2", "rollout.cpus_per_engine=1.5"], "rollout.cpus_per_engine", "the local Ray has 2"),
])
@pytest.mark.parametrize("kind", ["ppo", "grpo"])
def test_invalid_rollout_configs_are_refused_naming_key_and_fix(vllm_installed, kind, overrides, key, words):
    with pytest.raises(ConfigError) as info:
        load(kind, overrides)
    assert info.value.key == key and words in str(info.value), str(info.value)


@pytest.mark.parametrize("kind", ["ppo", "grpo"])
def test_separate_engines_that_fit_the_local_ray_are_accepted_and_planned(vllm_installed, kind):
    """1 engine x 1 CPU beside the roles' 0.25-CPU bundles fits 2 CPUs; 3 x 1 does not (the count names the
    roles' own CPUs: ppo starts 4 roles, grpo 3 with its default KL)."""
    from orchestrator.entry import dry_run_text

    base = ["rollout.engine=vllm", "model=tiny_h32", "rollout.layout=separate", "cluster.num_cpus=2"]
    cfg = load(kind, base)
    assert (cfg.rollout.num_engines, cfg.rollout.cpus_per_engine) == (1, 1.0)
    assert "rollout_engines" in dry_run_text(cfg)
    roles_cpus = 1.0 if kind == "ppo" else 0.75
    with pytest.raises(ConfigError) as info:
        load(kind, base + ["rollout.num_engines=3"])
    assert f"roles' {roles_cpus:g} CPUs need {roles_cpus + 3:g}" in str(info.value), str(info.value)


def test_vllm_missing_is_refused_with_the_install_command(monkeypatch):
    monkeypatch.setattr("orchestrator.config.rollout.vllm_available", lambda: False)
    with pytest.raises(ConfigError) as info:
        load("ppo", ["rollout.engine=vllm", "model=tiny_h32"])
    assert info.value.key == "rollout.engine" and "pip install -e '.[vllm]'" in info.value.fix


def test_defaults_and_a_valid_vllm_config(vllm_installed):
    from orchestrator.config.rollout import rollout_tags

    cfg = load("ppo")
    assert (cfg.rollout.engine, cfg.rollout.layout, cfg.rollout.tis_cap) == ("hf", "colocated", None)
    assert rollout_tags(cfg) == {"rollout.engine": "hf", "rollout.reproducible": "true"}
    cfg = load("ppo", ["rollout.engine=vllm", "model=tiny_h32", "rollout.tis_cap=2"])
    assert cfg.model.head_dim == 32 and cfg.rollout.tis_cap == 2.0
    assert rollout_tags(cfg)["rollout.reproducible"] == "false"
    cfg = load("grpo", ["rollout.engine=vllm", "model=tiny_h32", "rollout.tis_cap=2"])
    assert (cfg.rollout.engine, cfg.rollout.tis_cap) == ("vllm", 2.0)


def test_grpo_groups_carry_the_engine_logprobs_into_the_mismatch():
    """Rows of a round -> groups (dynamic sampling may drop or reorder them) -> one batch: each row's engine
    log-probs stay with its response, padded like the responses when rounds differ in length."""
    from orchestrator.rlhf.groups import concat_responses, split_groups
    from orchestrator.rlhf.mismatch import engine_mismatch

    responses = torch.tensor([[5, 2, 0], [6, 7, 2], [8, 2, 0], [9, 9, 9]])
    engine = -torch.arange(12, dtype=torch.float32).reshape(4, 3) / 10
    groups = split_groups([{"p": 0}, {"p": 1}], responses, torch.tensor([0.0, 1.0, 1.0, 1.0]), {}, 2, engine)
    assert torch.equal(groups[1].engine_logprobs, engine[2:])
    short = split_groups([{"p": 2}], torch.tensor([[4, 2], [3, 2]]), torch.tensor([0.0, 1.0]), {}, 2,
                         torch.full((2, 2), -0.5))[0]
    chosen = [groups[1], short]  # group 0 dropped (e.g. by dynamic sampling), a shorter round's group after
    rows = concat_responses(chosen, 0)
    mask = (torch.arange(3) < torch.tensor([[2], [3], [2], [2]])).float()  # up to and including EOS (id 2)
    exp = {"response_mask": mask, "old_logprobs": torch.full((4, 3), -0.5)}
    st = engine_mismatch(exp, [g.engine_logprobs for g in chosen], cap=None)
    assert rows.shape == exp["engine_logprobs"].shape == (4, 3)
    assert torch.equal(exp["engine_logprobs"][:2], engine[2:]) and torch.equal(exp["engine_logprobs"][2:, 2], torch.zeros(2))
    diffs = [abs(-0.5 + 0.6), abs(-0.5 + 0.7), abs(-0.5 + 0.9), abs(-0.5 + 1.0), abs(-0.5 + 1.1), 0, 0, 0, 0]
    assert st["mismatch_logp_abs_mean"] == pytest.approx(sum(diffs) / 9)
    assert split_groups([{}], responses[:2], torch.zeros(2), {}, 2)[0].engine_logprobs is None  # hf


def test_tis_weights_are_the_capped_ratio_and_one_outside_the_mask():
    from orchestrator.rlhf.mismatch import tis_weights

    actor = torch.tensor([[-1.0, -2.0, -3.0]])
    engine = torch.tensor([[-1.5, -1.0, float("nan")]])  # NaN in the padding must not leak
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    w = tis_weights(actor, engine, mask, cap=1.5)
    assert torch.allclose(w, torch.tensor([[1.5, math.exp(-1.0), 1.0]]))  # e^0.5 = 1.65 capped to 1.5
    assert tis_weights(actor, engine, mask, cap=None) is None


def test_mismatch_stats_by_hand():
    from orchestrator.rlhf.mismatch import mismatch_stats

    actor = torch.tensor([[-1.0, -2.0], [-0.5, -9.0]])
    engine = torch.tensor([[-1.2, -1.9], [-0.5, 0.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    st = mismatch_stats(actor, engine, mask, cap=1.1)
    assert st["mismatch_logp_abs_mean"] == pytest.approx((0.2 + 0.1 + 0.0) / 3)
    assert st["mismatch_ratio_max"] == pytest.approx(math.exp(0.2))
    assert st["mismatch_ratio_min"] == pytest.approx(math.exp(-0.1))
    assert st["tis_clipped_frac"] == pytest.approx(1 / 3)  # only e^0.2 = 1.22 exceeds 1.1


def test_engine_mismatch_pads_shards_and_is_a_noop_for_hf():
    from orchestrator.rlhf.mismatch import engine_mismatch

    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    exp = {"response_mask": mask, "old_logprobs": torch.full((2, 3), -1.0)}
    assert engine_mismatch(dict(exp), [None], cap=2.0) == {}
    shards = [torch.full((1, 3), -1.0), torch.full((1, 1), -2.0)]  # ranks' (or groups') R differ
    st = engine_mismatch(exp, shards, cap=2.0)
    assert exp["engine_logprobs"].shape == (2, 3)
    assert torch.allclose(exp["tis_weights"], torch.tensor([[1.0, 1.0, 1.0], [2.0, 1.0, 1.0]]))  # e^1 capped at 2
    assert st["mismatch_logp_abs_mean"] == pytest.approx(0.25)


def test_policy_loss_token_weights_scale_each_tokens_term():
    from orchestrator.rlhf.losses import policy_loss

    g = torch.Generator().manual_seed(0)
    logp = torch.randn(3, 4, generator=g, requires_grad=True)
    old, adv = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    mask = torch.tensor([[1.0, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]])
    base, _ = policy_loss(logp, old, adv, mask, 0.2)
    ones, _ = policy_loss(logp, old, adv, mask, 0.2, token_weights=torch.ones(3, 4))
    assert torch.equal(base, ones)
    w = torch.rand(3, 4, generator=g)
    weighted, _ = policy_loss(logp, old, adv, mask, 0.2, token_weights=w)
    ratio = torch.exp(logp - old)
    per_tok = torch.maximum(-adv * ratio, -adv * ratio.clamp(0.8, 1.2)) * w
    assert torch.allclose(weighted, (per_tok * mask).sum() / mask.sum())
    weighted.backward()  # the weights are constants: gradient flows through the ratio only
    assert logp.grad is not None and torch.all(logp.grad[mask == 0] == 0)


def test_version_check_and_hf_engine_sync():
    from orchestrator.rlhf.rollout_engines import HFEngine, StaleRolloutEngineError, check_version, request_seed

    eng = HFEngine(torch.nn.Linear(1, 1))
    check_version(eng, 0)
    with pytest.raises(StaleRolloutEngineError, match="version 0 but the actor is at version 2"):
        check_version(eng, 2)
    eng.sync([], 2)
    check_version(eng, 2)
    seeds = {request_seed(7, r, i) for r in range(2) for i in range(64)}
    assert len(seeds) == 128 and all(0 <= s < 2**63 for s in seeds)


class _Call:
    def __init__(self, fn):
        self.remote = fn


class _FakeActorRank:
    """One actor rank: its engine returns responses of its own length R and log-probs -rank (no Ray)."""

    def __init__(self, rank: int, R: int) -> None:
        self.rank, self.R, self.calls = rank, R, []
        self.rollout = _Call(self._rollout)
        self.sync_rollout_engine = _Call(lambda: self.calls.append("sync"))

    def _rollout(self, shard, seed, stop, pad_id):
        self.calls.append(("rollout", shard["input_ids"][:, 0].tolist(), seed))
        B = shard["input_ids"].shape[0]
        return {"responses": torch.full((B, self.R), 10 + self.rank), "logprobs": torch.full((B, self.R), -float(self.rank))}


def test_engine_rollouts_shard_rows_in_order_pad_ranks_and_sync_after_load(monkeypatch):
    """The driver side both controllers share: contiguous row shards per actor rank, responses right-padded
    across ranks, each rank's engine log-probs kept in row order, and a checkpoint load syncs every rank."""
    import ray

    from orchestrator.rlhf.engine_client import EngineRollouts

    monkeypatch.setattr(ray, "get", lambda refs: refs)  # the fake ranks return values, not futures

    class Group:
        workers = [_FakeActorRank(0, 3), _FakeActorRank(1, 1)]

        def __len__(self):
            return 2

        def call(self, method):
            return [getattr(w, method).remote() for w in self.workers]

    ctl = EngineRollouts()
    ctl.groups = {"actor": Group()}
    prompts = {"input_ids": torch.arange(5).unsqueeze(1).repeat(1, 2), "attention_mask": torch.ones(5, 2)}
    responses, logprobs = ctl.rollout_responses(prompts, 7, [2, 3], pad_id=0)
    w0, w1 = ctl.groups["actor"].workers
    assert w0.calls == [("rollout", [0, 1], 7)] and w1.calls == [("rollout", [2, 3, 4], 7)]
    assert responses.tolist() == [[10, 10, 10]] * 2 + [[11, 0, 0]] * 3
    assert [lp.shape for lp in logprobs] == [(2, 3), (3, 1)] and float(logprobs[1][0, 0]) == -1.0
    ctl.after_load()
    assert w0.calls[-1] == w1.calls[-1] == "sync"

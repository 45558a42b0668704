"""Rollout tensors, token batches, batch sources, heads and the demo task on a tiny random model (no Ray)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from orchestrator.config.model import ModelConfig
from orchestrator.models.build import build_causal_lm
from orchestrator.data import task
from orchestrator.rlhf.batches import left_pad_prompts, token_logprobs
from orchestrator.training.records import encode_pair, pack_batch, pad_batch
from orchestrator.rlhf.rollout import (
    make_experience,
    minibatch_indices,
    pad_right,
    response_mask,
    response_slice,
    sequence_batch,
    shard_rows,
)

T = torch.tensor


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from transformers import AutoTokenizer

    d = task.ensure_task_dataset(tmp_path_factory.mktemp("task"), "sft", num_records=50, seed=0)
    return AutoTokenizer.from_pretrained(d / "tokenizer")


@pytest.fixture(scope="module")
def model(tok):
    torch.manual_seed(0)
    ids = {"pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id, "bos_token_id": tok.bos_token_id}
    return build_causal_lm(ModelConfig(vocab_size=512, seq_len=64), 0, special_ids=ids).eval()


def test_task_scores_and_records():
    assert task.score("list 3 fruit:", " apple plum cat") == pytest.approx(2 / 3)
    assert task.score("list 4 tool:", " saw") == pytest.approx(1 / 4)  # too short: divided by k
    assert task.score("list 2 color:", " red blue green pink") == 1.0
    assert task.score("hello", " apple") == 0.0
    prefs = task.preference_records(50, 1)
    assert all(task.score(r["prompt"], r["chosen"]) > task.score(r["prompt"], r["rejected"]) for r in prefs)
    assert task.sft_records(5, 3) == task.sft_records(5, 3)


def test_response_mask_stops_after_first_eos():
    assert response_mask(T([[5, 2, 7, 2], [5, 6, 7, 8]]), eos_id=2).tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]


def test_full_sequence_forward_reproduces_generation_logprobs(tok, model):
    """Left-padded prompts + cumsum position ids: the scoring pass sees exactly what generate sampled from."""
    prompts = ["list 2 fruit:", "list 4 animal:", "list 3 tool:"]
    pb = left_pad_prompts(tok, prompts, 48)
    torch.manual_seed(1)
    out = model.generate(**pb, do_sample=True, top_k=0, max_new_tokens=6, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, output_logits=True, return_dict_in_generate=True)
    responses = out.sequences[:, pb["input_ids"].shape[1]:]
    batch = sequence_batch(pb["input_ids"], pb["attention_mask"], responses, tok.eos_token_id, tok.pad_token_id)
    with torch.no_grad():
        mine = response_slice(token_logprobs(model, batch), batch["prompt_len"], shifted=True)
    gen = torch.stack([torch.log_softmax(lg.float(), -1) for lg in out.logits], dim=1)
    gen = gen.gather(2, responses.unsqueeze(-1)).squeeze(-1)
    mask = batch["response_mask"].bool()
    assert mine.shape == responses.shape
    assert torch.allclose(mine[mask], gen[mask], atol=1e-4)


def test_packing_has_no_cross_example_leakage(tok, model):
    items = [encode_pair(tok, r["prompt"], r["response"], 64, 48) for r in task.sft_records(4, 2)]
    padded, packed = pad_batch(items, tok.pad_token_id), pack_batch(items, 64, tok.pad_token_id)
    assert packed["input_ids"].shape[0] == 1  # four short examples share one row
    with torch.no_grad():
        lp_pad = token_logprobs(model, padded)
        lp_pack = token_logprobs(model, packed)
    m_pad, m_pack = padded["loss_mask"][:, 1:].bool(), packed["loss_mask"][:, 1:].bool()
    assert torch.allclose(lp_pad[m_pad], lp_pack[m_pack], atol=1e-5)


def test_sft_source_loss_is_global_token_mean_for_any_micro_batching(tok, model):
    from orchestrator.kinds.sft import sft_objective
    from orchestrator.training.records import RecordsBatchSource, encode_records
    from orchestrator.training.sampler import StepSampler

    enc = encode_records(tok, task.sft_records(16, 5), "sft", 64, 48)
    full = pad_batch(enc[:8], tok.pad_token_id)
    with torch.no_grad():
        lp = token_logprobs(model, full)
    m = full["loss_mask"][:, 1:]
    expected = float(-(lp * m).sum() / m.sum())
    for micro in (1, 2, 4, 8):
        for dp in (1, 2):
            if 8 % (micro * dp):
                continue
            total = 0.0
            for rank in range(dp):
                sampler = StepSampler(indices=np.arange(8), global_batch=8, micro_batch=micro, dp_rank=rank,
                                      dp_size=dp, seed=0, shuffle=False)
                src = RecordsBatchSource(enc, sampler, "sft", tok.pad_token_id, 64)
                mbs = src.next_step()
                with torch.no_grad():
                    # DeepSpeed divides by grad-accumulation steps, then averages over dp ranks
                    total += sum(float(sft_objective(model, mb)[0]) for mb in mbs) / len(mbs) / dp
            assert total == pytest.approx(expected, rel=1e-5), (micro, dp)


def test_make_experience_end_to_end_numbers():
    batch = {"response_mask": T([[1.0, 1.0, 0.0]]), "input_ids": torch.zeros(1, 5, dtype=torch.long)}
    logp, ref = T([[-1.0, -1.0, -9.0]]), T([[-1.5, -1.0, -1.0]])
    values = T([[0.0, 0.0, 0.0]])
    exp, stats = make_experience(batch, logp, ref, values, T([1.0]), beta=0.1, kl_kind="k1", gamma=1.0, lam=1.0,
                                 whiten=False)
    # rewards: [-0.1*0.5, 0 + 1.0, 0]; gamma=lam=1, V=0: advantages are rewards-to-go
    assert torch.allclose(exp["rewards"], T([[-0.05, 1.0, 0.0]]))
    assert torch.allclose(exp["advantages"], T([[0.95, 1.0, 0.0]]))
    assert stats["kl"] == pytest.approx(0.5) and stats["response_length"] == 2.0


def test_minibatches_cover_rollout_and_shards_split_rows():
    mbs = minibatch_indices(8, 4, seed=1, step=3, epoch=0)
    assert sorted(np.concatenate(mbs).tolist()) == list(range(8))
    assert [m.tolist() for m in mbs] == [m.tolist() for m in minibatch_indices(8, 4, 1, 3, 0)]
    parts = shard_rows({"x": torch.arange(5)[:, None], "prompt_len": 3}, 2)
    assert [p["x"].flatten().tolist() for p in parts] == [[0, 1], [2, 3, 4]] and parts[1]["prompt_len"] == 3
    assert pad_right([torch.ones(1, 2), torch.ones(1, 3)], 0).tolist() == [[1, 1, 0], [1, 1, 1]]


def test_scalar_head_roundtrip_and_last_token(tmp_path, model):
    from orchestrator.models.heads import is_scalar_model_dir, last_token_values, load_scalar_model

    from orchestrator.models.heads import ScalarHeadModel

    rm = ScalarHeadModel(model, kind="reward")
    ids = torch.randint(3, 300, (2, 6))
    att = T([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        v = rm(ids, att)
    assert last_token_values(v, att).tolist() == [v[0, 3].item(), v[1, 5].item()]
    rm.save(tmp_path / "rm", reward_mean=1.5, reward_std=0.5)
    assert is_scalar_model_dir(tmp_path / "rm")
    back = load_scalar_model(tmp_path / "rm")
    assert back.meta["reward_mean"] == 1.5 and back.kind == "reward"
    with torch.no_grad():
        assert torch.allclose(back(ids, att), v, atol=1e-6)


def test_role_bundles_colocated_and_spread():
    from orchestrator.kinds import load
    from orchestrator.rlhf.placement import bundles_for

    cfg = load("ppo", ["ppo.actor.num_workers=2", "ppo.reward.num_cpus=0.5"])
    bundles, index = bundles_for(cfg.ppo)
    assert bundles == [{"CPU": 0.25 * 2 + 0.25 + 0.25 + 0.5}] and index["actor"] == [0, 0]
    spread = load("ppo", ["ppo.actor.num_workers=2", "ppo.colocate=false"])
    bundles, index = bundles_for(spread.ppo)
    assert len(bundles) == 5 and index["actor"] == [0, 1] and index["reward"] == [4]

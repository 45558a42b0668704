"""Conversations end to end, one data_prep per records format and one SFT model for the module.

data_prep on a generated multi-turn chat JSONL (bad conversations planted), then sft on it: held-out
assistant-token loss falls and the export, loaded with plain transformers, answers through
``apply_chat_template`` + ``generate`` and stops at the end of its turn. From that export: reward_model
and dpo on multi-turn conversation pairs (both input forms, bad pairs planted), and ppo on conversation
prompts (bad prompts planted) scored by the chat reward model, with the rule reward reading the last
request and generation stopping at the template's end of turn.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from orchestrator.data import task
from tests.integration.rlhf_helpers import job_cfg

pytestmark = pytest.mark.slow

SEQ_LEN = 128


def prep(ws: Path, name: str, fmt: str, records: list[dict], *extra: str) -> tuple[dict, Counter, list[dict]]:
    """One data_prep of ``records``: its result, quarantine reasons counted, the kept records."""
    from orchestrator.data.job import run_data_prep
    from orchestrator.data.shards import read_records
    from orchestrator.kinds import load

    src = ws / f"{name}.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    res = run_data_prep(load("data_prep", [f"workspace={ws}", f"run_name={name}", f"data.format={fmt}",
                                           f"data.input={src}", "data.minhash.enabled=false",
                                           "tracking.enabled=false", "cluster.num_cpus=2", *extra]))
    with open(f"{res['output_dir']}/quarantine.jsonl") as f:
        reasons = Counter(json.loads(line)["reason"] for line in f)
    return res, reasons, read_records(res["dataset_dir"])


@pytest.fixture(scope="module")
def chat_sft(ray_local, tmp_path_factory):
    """data_prep (sft) on multi-turn conversations and an SFT model trained on them (reused below)."""
    from orchestrator.kinds.sft import run as run_sft

    ws = tmp_path_factory.mktemp("chat")
    data, reasons, recs = prep(ws, "chat_prep", "sft", task.chat_records(400, seed=0, bad=True))
    cfg = job_cfg("sft", ws, "chat_sft", f"data.path={data['dataset_dir']}", f"model.seq_len={SEQ_LEN}",
                  "trainer.max_steps=150", "trainer.global_batch_size=16", "parallel.micro_batch_size=8",
                  "trainer.save_every=0", "optim=adamw_constant", "tracking.enabled=false")
    return {"ws": ws, "prep": data, "reasons": reasons, "records": recs, "res": run_sft(cfg)}


def test_chat_data_prep_then_sft_learns_and_exports_a_chat_model(chat_sft):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from orchestrator.data.chat_template import DEFAULT_CHAT_TEMPLATE

    prep, recs = chat_sft["prep"], chat_sft["records"]
    assert prep["quarantined"] == len(task.BAD_CONVERSATIONS)
    assert chat_sft["reasons"] == Counter({f"chat_{r}": 1 for r in task.BAD_CONVERSATIONS})
    assert all(set(r) == {"id", "messages"} for r in recs) and len(recs) == prep["docs_kept"]
    data_tok = AutoTokenizer.from_pretrained(f"{prep['dataset_dir']}/tokenizer")
    assert data_tok.chat_template == DEFAULT_CHAT_TEMPLATE

    res = chat_sft["res"]
    ev = res["eval"]
    assert ev["eval_loss"] < 0.5 * ev["initial_eval_loss"], ev  # held-out assistant-token NLL

    tok = AutoTokenizer.from_pretrained(res["export_dir"])
    model = AutoModelForCausalLM.from_pretrained(res["export_dir"])
    end = tok.convert_tokens_to_ids("<|im_end|>")
    msgs = [{"role": "system", "content": task.CHAT_SYSTEM}, {"role": "user", "content": "list 3 fruit:"}]
    ids = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    reply = out[0, ids["input_ids"].shape[1]:].tolist()
    assert end in reply  # generation stops at the template's end of turn (generation_config)
    words = tok.decode(reply[: reply.index(end)]).split()
    assert words and sum(w in task.TOPICS["fruit"] for w in words) / len(words) >= 0.5, words


@pytest.fixture(scope="module")
def chat_pairs(chat_sft):
    """data_prep (preference) on multi-turn pairs, with the SFT export's tokenizer (nothing trained)."""
    export = chat_sft["res"]["export_dir"]
    data, reasons, recs = prep(chat_sft["ws"], "chat_pairs", "preference",
                               task.chat_preference_records(320, seed=1, bad=True), f"data.tokenizer_path={export}")
    return {"prep": data, "reasons": reasons, "records": recs, "policy": export, "ws": chat_sft["ws"]}


@pytest.fixture(scope="module")
def chat_reward_model(chat_pairs):
    from orchestrator.kinds.reward_model import run as run_reward_model

    cfg = job_cfg("reward_model", chat_pairs["ws"], "chat_rm", f"model.pretrained={chat_pairs['policy']}",
                  f"data.path={chat_pairs['prep']['dataset_dir']}", f"model.seq_len={SEQ_LEN}",
                  "trainer.max_steps=40", "trainer.global_batch_size=32", "parallel.micro_batch_size=16",
                  # constant LR, 32 pairs a step: the head starts on a plateau (the SFT model's state at
                  # <|im_end|> hardly varies) that a decaying LR or smaller batches leave too slowly
                  "optim=adamw_constant", "trainer.lr=2e-3", "trainer.save_every=0", "tracking.enabled=false")
    return run_reward_model(cfg)


def test_conversation_pairs_prepared_in_both_forms_and_bad_pairs_quarantined(chat_pairs):
    prep, recs = chat_pairs["prep"], chat_pairs["records"]
    assert chat_pairs["reasons"] == Counter({f"chat_{r}": 1 for r in task.BAD_PREFERENCES})
    assert prep["quarantined"] == len(task.BAD_PREFERENCES) and len(recs) == prep["docs_kept"] == 320
    assert all(set(r) == {"id", "prompt", "chosen", "rejected"} and r["prompt"][-1]["role"] == "user"
               and [m["role"] for m in r["chosen"]] == [m["role"] for m in r["rejected"]] == ["assistant"]
               for r in recs)
    assert Counter(len(r["prompt"]) for r in recs).keys() == {2, 4, 6}  # system + 0..2 earlier exchanges + request


def test_reward_model_on_conversation_pairs_ranks_held_out_pairs(chat_reward_model):
    ev = chat_reward_model["eval"]
    print("chat RM held-out accuracy", ev["initial_eval_accuracy"], "->", ev["eval_accuracy"],
          "loss", ev["initial_eval_loss"], "->", ev["eval_loss"])
    assert ev["eval_accuracy"] >= 0.8 and ev["eval_accuracy"] >= ev["initial_eval_accuracy"] + 0.2, ev
    assert ev["eval_loss"] < ev["initial_eval_loss"]


def test_chat_reward_model_ranks_replies_laid_out_as_ppo_rollouts(chat_reward_model):
    """The score position carries over to PPO: fresh pairs laid out as rollouts (left-padded prompt with
    the generation prompt, reply tokens ending at <|im_end|>, the reward role's position ids) are ranked
    as the reward model learned on the pair sequences."""
    import torch
    from transformers import AutoTokenizer

    from orchestrator.data.chat import tokenize_prompt
    from orchestrator.data.chat_records import to_chat_record
    from orchestrator.models.heads import last_token_values, load_scalar_model
    from orchestrator.rlhf.batches import left_pad_prompts
    from orchestrator.rlhf.chat_prompts import generation_stop_ids
    from orchestrator.rlhf.rollout import pad_right, sequence_batch

    export = chat_reward_model["export_dir"]
    tok, model = AutoTokenizer.from_pretrained(export), load_scalar_model(export, kind="reward")
    end = tok.convert_tokens_to_ids("<|im_end|>")
    pairs = [to_chat_record(r, "preference") for r in task.chat_preference_records(32, seed=99)]
    prompts = [tok.decode(tokenize_prompt(tok, p["prompt"], SEQ_LEN)) for p in pairs]
    scores = []
    for side in ("chosen", "rejected"):
        replies = [torch.tensor([tok(p[side][0]["content"], add_special_tokens=False)["input_ids"] + [end]])
                   for p in pairs]
        pb = left_pad_prompts(tok, prompts, SEQ_LEN)
        batch = sequence_batch(pb["input_ids"], pb["attention_mask"], pad_right(replies, tok.pad_token_id),
                               generation_stop_ids(tok, chat=True), tok.pad_token_id)
        with torch.no_grad():
            values = model(batch["input_ids"], batch["attention_mask"], batch["position_ids"])
        scores.append(last_token_values(values, batch["attention_mask"]))
    accuracy = float((scores[0] > scores[1]).float().mean())
    print("chat RM accuracy on rollout-layout pairs", accuracy)
    assert accuracy >= 0.8, accuracy


def test_dpo_on_conversation_pairs_raises_the_held_out_margin(chat_pairs):
    from orchestrator.kinds.dpo import run as run_dpo

    cfg = job_cfg("dpo", chat_pairs["ws"], "chat_dpo", f"model.pretrained={chat_pairs['policy']}",
                  f"data.path={chat_pairs['prep']['dataset_dir']}", f"model.seq_len={SEQ_LEN}", "dpo.beta=0.5",
                  "trainer.max_steps=20", "trainer.global_batch_size=16", "parallel.micro_batch_size=8",
                  "trainer.lr=1e-3", "optim.weight_decay=0.0", "trainer.save_every=0", "tracking.enabled=false")
    ev = run_dpo(cfg)["eval"]
    print("chat DPO held-out margin", ev["initial_eval_margin"], "->", ev["eval_margin"], "accuracy",
          ev["initial_eval_accuracy"], "->", ev["eval_accuracy"])
    assert ev["initial_eval_margin"] == pytest.approx(0.0, abs=1e-6)  # policy == reference at the start
    assert ev["eval_margin"] > 0.2 and ev["eval_accuracy"] > 0.6, ev
    assert ev["eval_loss"] < ev["initial_eval_loss"]


def test_ppo_on_conversation_prompts_scored_by_the_chat_reward_model(chat_pairs, chat_reward_model):
    from transformers import AutoTokenizer

    from orchestrator.kinds.ppo import run as run_ppo
    from orchestrator.training.loop import read_steps

    data, reasons, recs = prep(chat_pairs["ws"], "chat_prompts", "prompts", task.chat_prompt_records(64, 2, bad=True),
                               f"data.tokenizer_path={chat_pairs['policy']}")
    assert reasons == Counter({f"chat_{r}": 1 for r in task.BAD_PROMPTS})
    assert len(recs) == data["docs_kept"] >= 32  # short conversations repeat: exact dedup keeps one of each
    assert all(r["prompt"][-1]["role"] == "user" for r in recs)
    max_new = 12
    cfg = job_cfg("ppo", chat_pairs["ws"], "chat_ppo", f"model.pretrained={chat_pairs['policy']}",
                  f"ppo.reward_model={chat_reward_model['export_dir']}", f"data.path={data['dataset_dir']}",
                  f"model.seq_len={SEQ_LEN}", f"ppo.max_new_tokens={max_new}", "trainer.max_steps=2",
                  "trainer.save_every=0", "ppo.rollout_batch_size=16", "ppo.minibatch_size=8",
                  "ppo.num_samples_logged=16", "tracking.enabled=false")
    res = run_ppo(cfg)
    steps = read_steps(res["output_dir"])
    print("chat PPO steps", {s: {k: round(v, 3) for k, v in st.items() if k in (
        "reward_mean", "rule_score_mean", "response_length", "kl")} for s, st in steps.items()})
    assert sorted(steps) == [1, 2]
    first = steps[1]
    # replies stop at <|im_end|> (EOS never follows an assistant turn in this data, so without the
    # template's stop id every response would run to max_new_tokens)
    assert first["response_length"] < 0.6 * max_new, first
    # the rule reads the last request of the multi-turn prompt and scores the assistant turn's content
    assert first["rule_score_mean"] >= 0.6, first
    assert first["reward_mean"] != first["rule_score_mean"]  # the chat reward model scored
    table = json.loads((Path(res["output_dir"]) / "samples" / "step_000002.json").read_text())
    assert len(table["response"]) == 16
    assert all(p.endswith("<|im_start|>assistant\n") for p in table["prompt"])
    assert not any("<|im_" in r for r in table["response"])  # the content only, no control tokens
    gen = json.loads((Path(res["export_dir"]) / "generation_config.json").read_text())
    tok = AutoTokenizer.from_pretrained(res["export_dir"])
    assert tok.convert_tokens_to_ids("<|im_end|>") in gen["eos_token_id"]  # the export still stops at end of turn
    assert tok.chat_template and "<|im_start|>" in tok.chat_template  # the ppo export carries the template

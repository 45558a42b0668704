"""Conversations end to end: data_prep on a generated multi-turn chat JSONL (bad conversations planted),
then sft on it; held-out assistant-token loss falls and the export, loaded with plain transformers,
answers through ``apply_chat_template`` + ``generate`` and stops at the end of its turn."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from orchestrator.data import task
from tests.integration.rlhf_helpers import job_cfg

pytestmark = pytest.mark.slow


def test_chat_data_prep_then_sft_learns_and_exports_a_chat_model(ray_local, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from orchestrator.data.chat_template import DEFAULT_CHAT_TEMPLATE
    from orchestrator.data.job import run_data_prep
    from orchestrator.data.shards import read_records
    from orchestrator.kinds import load
    from orchestrator.kinds.sft import run as run_sft

    src = tmp_path / "chats.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in task.chat_records(400, seed=0, bad=True)))
    prep = run_data_prep(load("data_prep", [f"workspace={tmp_path}", "run_name=chat_prep", "data.format=sft",
                                            f"data.input={src}", "data.minhash.enabled=false",
                                            "tracking.enabled=false", "cluster.num_cpus=2"]))
    with open(f"{prep['output_dir']}/quarantine.jsonl") as f:
        reasons = Counter(json.loads(line)["reason"] for line in f)
    recs = read_records(prep["dataset_dir"])
    assert prep["quarantined"] == len(task.BAD_CONVERSATIONS)
    assert reasons == Counter({f"chat_{r}": 1 for r in task.BAD_CONVERSATIONS})
    assert all(set(r) == {"id", "messages"} for r in recs) and len(recs) == prep["docs_kept"]
    data_tok = AutoTokenizer.from_pretrained(f"{prep['dataset_dir']}/tokenizer")
    assert data_tok.chat_template == DEFAULT_CHAT_TEMPLATE

    cfg = job_cfg("sft", tmp_path, "chat_sft", f"data.path={prep['dataset_dir']}", "model.seq_len=128",
                  "trainer.max_steps=150", "trainer.global_batch_size=16", "parallel.micro_batch_size=8",
                  "trainer.save_every=0", "optim=adamw_constant", "tracking.enabled=false")
    res = run_sft(cfg)
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

"""PPO/GRPO conversation prompts: rendered with the generation prompt, stop ids, responses read back."""

from __future__ import annotations

import pytest
import torch

from orchestrator.config.errors import ConfigError
from orchestrator.data.chat import tokenize_prompt
from orchestrator.rlhf.chat_prompts import generation_stop_ids, response_text, rollout_prompts, rollout_records
from orchestrator.rlhf.rollout import response_mask
from tests.unit.data.test_chat import CONV
from tests.unit.training.test_records_chat import tok  # noqa: F401  (module fixture)


def test_conversation_prompts_render_with_generation_prompt_and_flat_prompts_pass(tok):  # noqa: F811
    recs = [{"id": "a", "prompt": CONV[:2]}, {"id": "b", "messages": CONV[:3]}, {"id": "c", "prompt": "list 3 fruit:"},
            {"id": "d", "prompt": [{"role": "robot", "content": "x"}]}]
    texts, chat, dropped = rollout_prompts(tok, recs, 512)
    assert chat and dropped == 1  # the malformed one
    assert texts[0] == texts[1] == ("<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nhello there"
                                    "<|im_end|>\n<|im_start|>assistant\n")
    assert tok(texts[0], add_special_tokens=False)["input_ids"] == tokenize_prompt(tok, CONV[:2], 512)
    assert texts[2] == "list 3 fruit:"


def test_conversation_prompts_need_a_template(tok):  # noqa: F811
    import copy

    bare = copy.deepcopy(tok)
    bare.chat_template = None
    with pytest.raises(ConfigError, match="model.pretrained"):
        rollout_prompts(bare, [{"prompt": CONV[:2]}], 512)


def test_generation_stops_at_end_of_turn_and_response_reads_back(tok):  # noqa: F811
    end = tok.convert_tokens_to_ids("<|im_end|>")
    stops = generation_stop_ids(tok, chat=True)
    assert stops == [end, tok.eos_token_id] and generation_stop_ids(tok, chat=False) == [tok.eos_token_id]
    words = tok("plum pear", add_special_tokens=False)["input_ids"]
    resp = torch.tensor([words + [end, 7, 7], words + [tok.eos_token_id, 7, 7]])
    n = len(words)
    assert response_mask(resp, stops).tolist() == [[1.0] * (n + 1) + [0.0] * 2] * 2
    assert response_mask(resp, tok.eos_token_id).tolist()[1] == [1.0] * (n + 1) + [0.0] * 2
    assert response_text(tok, resp[0].tolist()) == "plum pear"


def test_rollout_records_keep_the_fields_reward_functions_read(tok):  # noqa: F811
    recs = [{"id": "a", "prompt": CONV[:2], "answer": "4"}, {"id": "b", "prompt": "compute 2+2:", "answer": "4"},
            {"id": "c", "messages": CONV[:3], "answer": "5"}]
    out, chat, dropped = rollout_records(tok, recs, 512)
    assert chat and dropped == 0 and [r["id"] for r in out] == ["a", "b", "c"]
    assert [r["answer"] for r in out] == ["4", "4", "5"] and "messages" not in out[2]
    assert out[0]["prompt"] == out[2]["prompt"] == rollout_prompts(tok, recs[:1], 512)[0][0]
    assert out[1] == recs[1] and out[1] is not recs[1]  # flat records pass unchanged (copied)


class _Remote:
    def __init__(self, fn):
        self.remote = fn


class _FakeActor:
    """An actor role whose ``generate`` returns fixed responses and records the stop ids it was given."""

    def __init__(self, responses):
        self.stops = None

        def generate(prompts, seed, eos_id, pad_id):
            self.stops = eos_id
            return responses[: prompts["input_ids"].shape[0]]
        self.generate = _Remote(generate)


def test_grpo_generation_stops_at_the_chat_templates_end_of_turn(tok, tmp_path, monkeypatch):  # noqa: F811
    import ray

    from orchestrator.kinds import load
    from orchestrator.rlhf.grpo import GRPOController

    tok.save_pretrained(tmp_path / "tok")
    end = tok.convert_tokens_to_ids("<|im_end|>")
    words = tok("plum pear", add_special_tokens=False)["input_ids"]
    n = len(words)
    responses = torch.tensor([words + [end, 7, 7], words + [tok.eos_token_id, 7, 7], words + [7, 7, 7]])
    cfg = load("grpo", [f"workspace={tmp_path}", "grpo.max_new_tokens=5"])
    records, chat, _ = rollout_records(tok, [{"id": "a", "prompt": CONV[:2]}], 48)
    ctl = GRPOController(cfg, policy_dir="unused", reward_dir=None, tokenizer_dir=str(tmp_path / "tok"),
                         records=records, tracker=None, env={}, stop_ids=generation_stop_ids(tok, chat))
    actor = _FakeActor(responses)
    ctl.groups = {"actor": type("G", (), {"workers": [actor], "__len__": lambda self: 1})()}
    monkeypatch.setattr(ray, "get", lambda refs: refs)
    batch = ctl._generate([records[0]["prompt"]] * 3, seed=0)
    assert actor.stops == [end, tok.eos_token_id]  # the engine stops at the end of turn, and at EOS
    assert batch["response_mask"].tolist() == [[1.0] * (n + 1) + [0.0] * 2] * 2 + [[1.0] * (n + 3)]
    # with flat prompts (no template in play) EOS alone ends a response, as before
    flat = GRPOController(cfg, policy_dir="unused", reward_dir=None, tokenizer_dir=str(tmp_path / "tok"),
                          records=[{"prompt": "list 3 fruit:"}], tracker=None, env={})
    assert flat.stop == tok.eos_token_id

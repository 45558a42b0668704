"""PPO/GRPO conversation prompts: rendered with the generation prompt, stop ids, responses read back."""

from __future__ import annotations

import pytest
import torch

from orchestrator.config.errors import ConfigError
from orchestrator.data.chat import tokenize_prompt
from orchestrator.rlhf.chat_prompts import generation_stop_ids, response_text, rollout_prompts
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

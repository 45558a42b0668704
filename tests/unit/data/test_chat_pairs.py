"""Preference pairs in chat form, token by token: the chosen and rejected sequences of reward_model and
dpo share their prompt tokens exactly (generation prompt included), differ only after them, train the
reply's assistant tokens and end-of-turn marker and nothing else, and end at that marker (the score
position of a reward model), with our default template and with a second, different one."""

from __future__ import annotations

import pytest
import torch

from orchestrator.data.chat import ChatFormatError, tokenize_preference, tokenize_prompt
from orchestrator.data.chat_records import to_chat_record
from orchestrator.data.chat_template import ensure_chat_template
from orchestrator.models.heads import last_token_index
from orchestrator.training.records import collate, encode_records
from tests.unit.data.test_chat import ALT_TEMPLATE, CALL, CONV, build, chatml
from tests.unit.data.test_chat import raw_tok, tok, tok_dir  # noqa: F401  (fixtures)

PROMPT = CONV[:4]  # system, user, assistant, user: history before the replies
CHOSEN = [{"role": "assistant", "content": "it is sunny"}]
REJECTED = [{"role": "assistant", "content": "cold and windy"}]
# a reply that calls a tool, reads its result and answers: two trained assistant messages, one tool message
TOOL_REPLY = [{"role": "assistant", "content": "", "tool_calls": [CALL]},
              {"role": "tool", "content": "sunny", "name": "get_weather"},
              {"role": "assistant", "content": "it is sunny"}]


def first_difference(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def test_default_template_pair_exact_ids_shared_prefix_and_end_of_turn(tok):  # noqa: F811
    S, E = tok.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    c, r = tokenize_preference(tok, PROMPT, CHOSEN, REJECTED, 512)
    for out, reply in ((c, CHOSEN), (r, REJECTED)):
        ids, mask = build(tok, *chatml(tok, PROMPT + reply, trained={4})[:-1])
        assert (out["input_ids"], out["loss_mask"]) == (ids, mask)
        assert out["labels"] == [t if m else -100 for t, m in zip(ids, mask)]
        assert out["input_ids"][-1] == E and out["loss_mask"][-1] == 1  # ends at, and trains, the end of turn
        trained = [t for t, m in zip(out["input_ids"], out["loss_mask"]) if m]
        assert tok.decode(trained, skip_special_tokens=False) == reply[0]["content"] + "<|im_end|>"
    # the shared prefix is the prompt rendered with the generation prompt, token for token, and untrained
    head = tokenize_prompt(tok, PROMPT, 512)
    assert head == build(tok, *chatml(tok, PROMPT), (S, 0), ("assistant\n", 0))[0]
    n = len(head)
    assert c["input_ids"][:n] == r["input_ids"][:n] == head
    assert first_difference(c["input_ids"], r["input_ids"]) == n
    assert not any(c["loss_mask"][:n]) and not any(r["loss_mask"][:n])
    assert c["loss_mask"][n] == r["loss_mask"][n] == 1  # the first reply token is trained


def test_multi_message_reply_trains_both_assistant_messages_not_the_tool_result(tok):  # noqa: F811
    c, r = tokenize_preference(tok, PROMPT, TOOL_REPLY, REJECTED, 512)
    assert (c["input_ids"], c["loss_mask"]) == build(tok, *chatml(tok, PROMPT + TOOL_REPLY, trained={4, 6})[:-1])
    trained = tok.decode([t for t, m in zip(c["input_ids"], c["loss_mask"]) if m], skip_special_tokens=False)
    assert trained == ('<tool_call>{"name": "get_weather", "arguments": {"city": "paris"}}</tool_call><|im_end|>'
                       "it is sunny<|im_end|>")
    n = len(tokenize_prompt(tok, PROMPT, 512))
    assert first_difference(c["input_ids"], r["input_ids"]) == n


def test_second_template_pair_shares_its_own_header_and_ends_at_eos(raw_tok):  # noqa: F811
    raw_tok.chat_template = ALT_TEMPLATE
    tok = ensure_chat_template(raw_tok)
    eos = tok.eos_token_id
    c, r = tokenize_preference(tok, PROMPT, CHOSEN, REJECTED, 512)
    head = tokenize_prompt(tok, PROMPT, 512)
    assert tok.decode(head).endswith("### USER:\nweather in paris\n\n### ASSISTANT:\n")
    n = len(head)
    assert c["input_ids"][:n] == r["input_ids"][:n] == head
    assert first_difference(c["input_ids"], r["input_ids"]) == n
    for out, reply in ((c, CHOSEN), (r, REJECTED)):
        assert out["input_ids"][-1] == eos and out["loss_mask"][-1] == 1
        assert tok.decode(out["input_ids"]) == tok.decode(head) + reply[0]["content"] + tok.eos_token
        trained = tok.decode([t for t, m in zip(out["input_ids"], out["loss_mask"]) if m])
        assert trained.strip() == reply[0]["content"] + tok.eos_token  # no "### " header, no user/system text
    # the earlier assistant turn of the prompt is context only
    assert "hi, how are you?" not in tok.decode([t for t, m in zip(c["input_ids"], c["loss_mask"]) if m])


def test_whole_conversation_pairs_render_like_shared_prompt_pairs(tok):  # noqa: F811
    whole = to_chat_record({"chosen": PROMPT + CHOSEN, "rejected": PROMPT + REJECTED}, "preference")
    shared = to_chat_record({"messages": PROMPT, "chosen": "it is sunny", "rejected": "cold and windy"},
                            "preference")
    assert whole == shared == {"prompt": PROMPT, "chosen": CHOSEN, "rejected": REJECTED}
    [(c, r)] = encode_records(tok, [{"id": "p", **whole}], "preference", 512, 48)
    ref_c, ref_r = tokenize_preference(tok, PROMPT, CHOSEN, REJECTED, 512)
    assert (c.ids, c.loss_mask, r.ids, r.loss_mask) == (ref_c["input_ids"], ref_c["loss_mask"],
                                                        ref_r["input_ids"], ref_r["loss_mask"])


def test_batched_pairs_score_at_the_end_of_turn_and_mask_the_replies(tok):  # noqa: F811
    """What reward_model and dpo see: chosen rows then rejected rows, right-padded; the reward model's
    score position (last real token) is each reply's ``<|im_end|>``; DPO's mask covers the replies only."""
    E = tok.convert_tokens_to_ids("<|im_end|>")
    recs = [{"id": "a", "prompt": PROMPT, "chosen": CHOSEN, "rejected": REJECTED},
            {"id": "b", "prompt": CONV[:2], "chosen": TOOL_REPLY, "rejected": [{"role": "assistant", "content": "hi"}]}]
    enc = encode_records(tok, recs, "preference", 512, 48)
    mb = collate(enc, "preference", tok.pad_token_id, 512, False)
    rows = [enc[0][0], enc[1][0], enc[0][1], enc[1][1]]
    assert mb["input_ids"].shape[0] == 4
    last = last_token_index(mb["attention_mask"])
    assert last.tolist() == [len(e.ids) - 1 for e in rows]
    assert mb["input_ids"][torch.arange(4), last].tolist() == [E] * 4
    for i, e in enumerate(rows):
        assert mb["loss_mask"][i, :len(e.ids)].tolist() == e.loss_mask and not mb["loss_mask"][i, len(e.ids):].any()


@pytest.mark.parametrize("chosen, rejected, reason", [
    (CHOSEN, list(CHOSEN), "identical_pair"),
    ([{"role": "user", "content": "hello there"}], REJECTED, "no_assistant"),
    (TOOL_REPLY[:2], REJECTED, "bad_order"),  # a reply ending with a tool result
    (CHOSEN, [{"role": "assistant", "content": " "}], "empty_content"),
    (CHOSEN, [{"role": "robot", "content": "x"}], "no_assistant"),
    (CHOSEN, [REJECTED[0], {"role": "robot", "content": "x"}, REJECTED[0]], "unknown_role"),
])
def test_bad_pairs_are_refused_with_their_reason(tok, chosen, rejected, reason):  # noqa: F811
    with pytest.raises(ChatFormatError) as e:
        tokenize_preference(tok, PROMPT, chosen, rejected, 512, record_id="p1")
    assert e.value.reason == reason
    with pytest.raises(ChatFormatError) as e:
        to_chat_record({"messages": PROMPT, "chosen": chosen, "rejected": rejected}, "preference", record_id="p1")
    assert e.value.reason == reason

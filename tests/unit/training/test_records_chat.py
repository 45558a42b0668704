"""Chat records through the training encoders: exact ids and masks, drops counted, flat records unchanged."""

from __future__ import annotations

import pytest

from orchestrator.data import task
from orchestrator.training.records import Encoded, encode_pair, encode_records, pack_batch
from tests.unit.data.test_chat import CONV, CORPUS, build, chatml


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from transformers import AutoTokenizer

    from orchestrator.data.chat_template import ensure_chat_template
    from orchestrator.data.tokenizer import train_bpe_tokenizer

    d = train_bpe_tokenizer(CORPUS * 20 + [" apple plum pear list 3 fruit:"] * 5, 400, tmp_path_factory.mktemp("t"))
    return ensure_chat_template(AutoTokenizer.from_pretrained(d))


def test_sft_chat_record_all_and_last_assistant(tok):
    rec = {"id": "c1", "messages": CONV}
    for train_on, trained in (("all_assistant", {2, 4, 6}), ("last_assistant", {6})):
        counts: dict = {}
        [enc] = encode_records(tok, [rec], "sft", 512, 48, train_on, counts)
        assert (enc.ids, enc.loss_mask) == build(tok, *chatml(tok, CONV, trained))
        assert counts == {"chat": 1, "dropped_too_long": 0, "turns_dropped": 0, "dropped_malformed": 0}


def test_too_long_conversation_cut_from_oldest_turn_or_dropped_and_counted(tok):
    full = len(build(tok, *chatml(tok, CONV))[0])
    tail = [CONV[0]] + CONV[3:]  # system + the second turn (user, tool call, tool, reply)
    tail_len = len(build(tok, *chatml(tok, tail))[0])
    counts: dict = {}
    out = encode_records(tok, [{"id": "a", "messages": CONV}, {"id": "b", "messages": CONV}], "sft", tail_len, 48,
                         counts=counts)
    assert tail_len < full and len(out) == 2
    assert (out[0].ids, out[0].loss_mask) == build(tok, *chatml(tok, tail, trained={2, 4}))
    assert counts == {"chat": 2, "dropped_too_long": 0, "turns_dropped": 2, "dropped_malformed": 0}
    counts = {}
    assert encode_records(tok, [{"id": "a", "messages": CONV}], "sft", tail_len - 1, 48, counts=counts) == []
    assert counts["dropped_too_long"] == 1


def test_preference_chat_record_shares_prompt_and_trains_replies(tok):
    prompt = CONV[:2]
    chosen, rejected = [{"role": "assistant", "content": "hi"}], [{"role": "assistant", "content": "cold"}]
    [(c, r)] = encode_records(tok, [{"id": "p", "prompt": prompt, "chosen": chosen, "rejected": rejected}],
                              "preference", 512, 48)
    assert (c.ids, c.loss_mask) == build(tok, *chatml(tok, prompt + chosen, trained={2})[:-1])
    assert (r.ids, r.loss_mask) == build(tok, *chatml(tok, prompt + rejected, trained={2})[:-1])
    shared = len(build(tok, *chatml(tok, prompt))[0]) + 2  # prompt turns + "<|im_start|>" "assistant\n"
    assert c.ids[:shared] == r.ids[:shared] and not any(c.loss_mask[:shared])


def test_flat_records_encode_exactly_as_before(tok):
    recs = task.sft_records(4, 1)
    assert encode_records(tok, recs, "sft", 64, 48) == [encode_pair(tok, r["prompt"], r["response"], 64, 48)
                                                        for r in recs]
    prefs = task.preference_records(3, 1)
    assert encode_records(tok, prefs, "preference", 64, 48) == [
        (encode_pair(tok, p["prompt"], p["chosen"], 64, 48), encode_pair(tok, p["prompt"], p["rejected"], 64, 48))
        for p in prefs]


def test_packing_keeps_conversation_masks(tok):
    enc = encode_records(tok, [{"id": i, "messages": CONV[:3]} for i in range(2)], "sft", 512, 48)
    n = len(enc[0].ids)
    mb = pack_batch(enc, 2 * n, tok.pad_token_id)
    assert mb["input_ids"][0].tolist() == enc[0].ids + enc[1].ids
    assert mb["loss_mask"][0].tolist() == enc[0].loss_mask + enc[1].loss_mask
    assert mb["position_ids"][0].tolist() == list(range(n)) * 2
    assert not mb["attention_mask"][0, 0, n, :n].any()  # the second conversation never sees the first
    assert isinstance(enc[0], Encoded)


def test_conversations_this_tokenizer_refuses_are_dropped_and_counted_not_fatal(tok):
    spelled = [CONV[1], {"role": "assistant", "content": "hi<|im_end|><|im_start|>system"}]
    recs = [{"id": "ok", "messages": CONV[:3]}, {"id": "s", "messages": spelled},
            {"id": "p", "prompt": CONV[:2], "chosen": [spelled[1]], "rejected": [{"role": "assistant", "content": "x"}]},
            {"id": "u", "messages": [CONV[1], {"role": "robot", "content": "x"}]}]
    counts: dict = {}
    out = encode_records(tok, recs[:2] + recs[3:], "sft", 512, 48, counts=counts)
    assert [e.ids for e in out] == [build(tok, *chatml(tok, CONV[:3]))[0]]
    assert counts["dropped_malformed"] == 2 and counts["malformed_control_token_in_content"] == 1
    assert counts["malformed_unknown_role"] == 1
    counts = {}
    assert encode_records(tok, recs[2:3], "preference", 512, 48, counts=counts) == []
    assert counts["malformed_control_token_in_content"] == 1

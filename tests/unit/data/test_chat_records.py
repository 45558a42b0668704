"""Raw conversation records -> canonical sft / preference / prompts chat records."""

from __future__ import annotations

import pytest

from orchestrator.data.chat import ChatFormatError
from orchestrator.data.chat_records import ChatFields, is_chat_record, to_chat_record

S = {"role": "system", "content": "You are terse."}
U = {"role": "user", "content": "weather in paris"}
A1 = {"role": "assistant", "content": "it is sunny"}
A2 = {"role": "assistant", "content": "cold and windy"}
HIST = [S, {"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}, U]


def reason(record, fmt, **kw):
    with pytest.raises(ChatFormatError) as e:
        to_chat_record(record, fmt, record_id="r1", **kw)
    assert e.value.record_id == "r1"
    return e.value.reason


def test_sft_messages_are_validated_and_canonical():
    rec = {"id": "r1", "messages": [S, U, A1 | {"weight": 1.0}], "source": "x"}
    assert to_chat_record(rec, "sft") == {"messages": [S, U, A1]}
    assert to_chat_record({"conv": [U, A1]}, "sft", ChatFields(messages="conv")) == {"messages": [U, A1]}
    assert reason({"messages": [S, U]}, "sft") == "no_assistant"
    assert reason({"prompt": "hi"}, "sft") == "missing_field"
    assert reason({"messages": [U, {"role": "bot", "content": "x"}]}, "sft") == "unknown_role"


def test_preference_from_whole_conversations_splits_at_the_replies():
    rec = {"chosen": HIST + [A1], "rejected": HIST + [A2]}
    assert to_chat_record(rec, "preference") == {"prompt": HIST, "chosen": [A1], "rejected": [A2]}
    assert reason({"chosen": HIST + [A1], "rejected": HIST + [A1]}, "preference") == "identical_pair"
    other = [S, {"role": "user", "content": "bye"}, A2]
    assert reason({"chosen": [S, U, A1], "rejected": other}, "preference") == "prompt_mismatch"
    assert reason({"chosen": HIST + [A1], "rejected": HIST}, "preference") == "prompt_mismatch"


@pytest.mark.parametrize("prompt_field, prompt", [("messages", HIST), ("prompt", HIST), ("prompt", "weather in paris")])
@pytest.mark.parametrize("chosen, rejected", [("it is sunny", "cold and windy"), (A1, A2), ([A1], [A2])])
def test_preference_from_shared_prompt_and_two_replies(prompt_field, prompt, chosen, rejected):
    out = to_chat_record({prompt_field: prompt, "chosen": chosen, "rejected": rejected}, "preference")
    expected_prompt = HIST if isinstance(prompt, list) else [U]
    assert out == {"prompt": expected_prompt, "chosen": [A1], "rejected": [A2]}


def test_preference_problems_have_reasons():
    assert reason({"prompt": HIST, "chosen": "same", "rejected": "same"}, "preference") == "identical_pair"
    assert reason({"prompt": HIST, "chosen": [U], "rejected": [A2]}, "preference") == "no_assistant"
    assert reason({"prompt": HIST + [A1], "chosen": [A1], "rejected": [A2]}, "preference") == "ends_with_assistant"
    assert reason({"prompt": HIST, "chosen": "x"}, "preference") == "missing_field"
    assert reason({"prompt": HIST, "chosen": "", "rejected": "x"}, "preference") == "empty_content"


def test_prompts_drop_trailing_assistant_turns():
    assert to_chat_record({"messages": HIST + [A1]}, "prompts") == {"prompt": HIST}
    assert to_chat_record({"prompt": "weather in paris"}, "prompts") == {"prompt": [U]}
    assert reason({"messages": [S]}, "prompts") == "no_user"
    assert reason({"messages": [U, {"role": "tool", "content": "x"}]}, "prompts") == "tool_without_call"


def test_chat_records_are_told_from_flat_ones():
    assert is_chat_record({"messages": [U, A1]}, "sft")
    assert not is_chat_record({"prompt": "q", "response": "a"}, "sft")
    assert is_chat_record({"chosen": [A1], "rejected": [A2], "prompt": "q"}, "preference")
    assert not is_chat_record({"chosen": "a", "rejected": "b", "prompt": "q"}, "preference")
    assert is_chat_record({"prompt": [U]}, "prompts") and not is_chat_record({"prompt": "q"}, "prompts")
    with pytest.raises(ValueError):
        to_chat_record({"text": "x"}, "pretrain")

"""Chat templates and assistant-only masks, checked token by token on a BPE tokenizer trained here (no hub).

Expected ids are built piece by piece: a piece is either a control token id or a text encoded on its
own. Each boundary between pieces is a pre-tokenisation boundary (a special token, or a newline before
a letter), so concatenating the pieces' ids is exactly what encoding the rendered text must give.
"""

from __future__ import annotations

import json

import pytest

from orchestrator.config.errors import ConfigError
from orchestrator.data.chat import (
    IGNORE_INDEX,
    ChatFormatError,
    completion_to_message,
    render_prompt,
    tokenize_conversation,
    tokenize_preference,
    tokenize_prompt,
    validate_messages,
)
from orchestrator.data.chat_template import (
    DEFAULT_CHAT_TEMPLATE,
    ChatTemplateError,
    end_of_turn_text,
    ensure_chat_template,
    render,
    stop_token_ids,
)

CORPUS = ["You are terse. hello there, hi how are you? weather in paris. it is sunny today, cold and windy.",
          "system user assistant tool get_weather city name arguments function list 3 fruit: apple plum pear",
          "code:\n  indented\n  block\n  more"]
CALL = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "paris"}}}
CONV = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "hello there"},
    {"role": "assistant", "content": "hi, how are you?"},
    {"role": "user", "content": "weather in paris"},
    {"role": "assistant", "content": "", "tool_calls": [CALL]},
    {"role": "tool", "content": "sunny", "name": "get_weather"},
    {"role": "assistant", "content": "it is sunny"},
]
# A second, different template: upper-case headers, EOS closes assistant turns only, blank-line separators.
ALT_TEMPLATE = (
    "{% for m in messages %}{{ '### ' + m['role'] | upper + ':\\n' + m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '### ASSISTANT:\\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    from orchestrator.data.tokenizer import train_bpe_tokenizer

    return train_bpe_tokenizer(CORPUS * 20, 400, tmp_path_factory.mktemp("tok"))


@pytest.fixture
def raw_tok(tok_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tok_dir)


@pytest.fixture
def tok(raw_tok):
    return ensure_chat_template(raw_tok)


def build(tok, *pieces):
    """(ids, mask) of pieces ``(text_or_token_id, trained)``."""
    ids, mask = [], []
    for p, trained in pieces:
        part = [p] if isinstance(p, int) else tok(p, add_special_tokens=False)["input_ids"]
        ids += part
        mask += [int(trained)] * len(part)
    return ids, mask


def chatml(tok, messages, trained=()):
    """Pieces of the default template for ``messages``; assistant ``trained`` indices carry loss."""
    S, E = tok.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    pieces = []
    for i, m in enumerate(messages):
        body = m["content"] + "".join(f"<tool_call>{json.dumps(c['function'])}</tool_call>"
                                      for c in m.get("tool_calls", ()))
        on = i in trained
        pieces += [(S, 0), (m["role"] + "\n", 0), *([(body, on)] if body else []), (E, on), ("\n", 0)]
    return pieces


def check(tok, out, pieces):
    ids, mask = build(tok, *pieces)
    assert out["input_ids"] == ids
    assert out["loss_mask"] == mask
    assert out["labels"] == [t if m else IGNORE_INDEX for t, m in zip(ids, mask)]


def trained_text(tok, out):
    return tok.decode([t for t, m in zip(out["input_ids"], out["loss_mask"]) if m], skip_special_tokens=False)


def test_default_template_is_applied_with_single_token_markers(raw_tok):
    assert raw_tok.chat_template is None
    n = len(raw_tok)
    tok = ensure_chat_template(raw_tok)
    assert tok.chat_template == DEFAULT_CHAT_TEMPLATE
    assert len(tok) == n + 2 and tok.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"]) == [n, n + 1]
    ensure_chat_template(tok)
    assert len(tok) == n + 2  # idempotent
    assert end_of_turn_text(tok) == "<|im_end|>"
    assert stop_token_ids(tok) == [n + 1, tok.eos_token_id]


def test_all_assistant_multi_turn_with_system_and_tool(tok):
    out = tokenize_conversation(tok, CONV, 512)
    check(tok, out, chatml(tok, CONV, trained={2, 4, 6}))
    assert out["num_turns_dropped"] == 0
    call = json.dumps(CALL["function"])
    assert trained_text(tok, out) == (f"hi, how are you?<|im_end|><tool_call>{call}</tool_call><|im_end|>"
                                      "it is sunny<|im_end|>")


def test_last_assistant_trains_only_the_final_reply(tok):
    out = tokenize_conversation(tok, CONV, 512, train_on="last_assistant")
    check(tok, out, chatml(tok, CONV, trained={6}))
    assert trained_text(tok, out) == "it is sunny<|im_end|>"


def test_turn_separators_kept_and_content_not_duplicated(tok):
    out = tokenize_conversation(tok, CONV, 512)
    text = tok.decode(out["input_ids"], skip_special_tokens=False)
    assert text == render(tok, CONV)
    assert text.count("<|im_end|>\n<|im_start|>") == len(CONV) - 1 and text.endswith("<|im_end|>\n")
    for m in CONV:
        if m["content"]:
            assert text.count(f"\n{m['content']}<") == 1


def test_no_loss_on_headers_system_user_or_tool(tok):
    out = tokenize_conversation(tok, CONV, 512)
    S = tok.convert_tokens_to_ids("<|im_start|>")
    ids, mask = out["input_ids"], out["loss_mask"]
    assert all(not m for t, m in zip(ids, mask) if t == S)
    # every trained span starts right after the header newline and ends on <|im_end|>
    starts = [i for i in range(1, len(ids)) if mask[i] and not mask[i - 1]]
    ends = [i for i in range(len(ids) - 1) if mask[i] and not mask[i + 1]]
    heads = [tok.decode(ids[max(j for j in range(i) if ids[j] == S):i]) for i in starts]
    assert heads == ["<|im_start|>assistant\n"] * 3
    assert [tok.convert_ids_to_tokens(ids[i]) for i in ends] == ["<|im_end|>"] * 3


def test_second_template_on_the_tokenizer_is_respected(raw_tok):
    raw_tok.chat_template = ALT_TEMPLATE
    tok = ensure_chat_template(raw_tok)
    assert tok.chat_template == ALT_TEMPLATE and "<|im_start|>" not in tok.get_vocab()
    eos = tok.eos_token_id
    conv = [CONV[0], CONV[1], CONV[2], {"role": "user", "content": "weather in paris"},
            {"role": "assistant", "content": "it is sunny"}]
    for train_on, trained in (("all_assistant", (True, True)), ("last_assistant", (False, True))):
        out = tokenize_conversation(tok, conv, 512, train_on=train_on)
        check(tok, out, [("### SYSTEM:\nYou are terse.\n\n### USER:\nhello there\n\n### ASSISTANT:\n", 0),
                         ("hi, how are you?", trained[0]), (eos, trained[0]),
                         ("\n\n### USER:\nweather in paris\n\n### ASSISTANT:\n", 0),
                         ("it is sunny", trained[1]), (eos, trained[1]), ("\n\n", 0)])
    assert end_of_turn_text(tok) == "<|eos|>" and stop_token_ids(tok) == [eos]


def test_override_by_string_and_by_file(raw_tok, tmp_path):
    raw_tok.chat_template = ALT_TEMPLATE
    path = tmp_path / "chatml.jinja"
    path.write_text(DEFAULT_CHAT_TEMPLATE)
    assert ensure_chat_template(raw_tok, str(path)).chat_template == DEFAULT_CHAT_TEMPLATE
    assert ensure_chat_template(raw_tok, ALT_TEMPLATE).chat_template == ALT_TEMPLATE
    with pytest.raises(ConfigError, match="data.chat_template"):
        ensure_chat_template(raw_tok, str(tmp_path / "missing.jinja"))


def test_saved_tokenizer_carries_the_template(tok, tmp_path):
    from transformers import AutoTokenizer

    tok.save_pretrained(tmp_path / "export")
    loaded = AutoTokenizer.from_pretrained(tmp_path / "export")
    assert loaded.chat_template == DEFAULT_CHAT_TEMPLATE
    ours = tokenize_conversation(tok, CONV, 512)["input_ids"]
    theirs = loaded.apply_chat_template(CONV, tokenize=True, return_dict=False)
    assert theirs == ours
    prompt = loaded.apply_chat_template(CONV[:4], add_generation_prompt=True, return_dict=False)
    assert prompt == tokenize_prompt(tok, CONV[:4], 512)


def test_truncation_drops_oldest_turns_keeps_system_never_cuts_a_turn(tok):
    conv = [CONV[0]]
    for k in range(4):
        conv += [{"role": "user", "content": f"list {k} fruit:"}, {"role": "assistant", "content": "apple plum"}]
    full = tokenize_conversation(tok, conv, 10_000)
    last = tokenize_conversation(tok, [conv[0], *conv[-2:]], 10_000)
    seen = set()
    for seq_len in range(len(last["input_ids"]) - 3, len(full["input_ids"]) + 1):
        out = tokenize_conversation(tok, conv, seq_len)
        if seq_len < len(last["input_ids"]):
            assert out is None
            continue
        k = out["num_turns_dropped"]
        seen.add(k)
        kept = [conv[0], *conv[1 + 2 * k:]]
        assert len(out["input_ids"]) <= seq_len
        assert out == tokenize_conversation(tok, kept, 10_000) | {"num_turns_dropped": k}
        check(tok, out, chatml(tok, kept, trained=set(range(2, len(kept), 2))))
    assert seen == {0, 1, 2, 3}


def test_too_long_is_dropped_and_tool_turn_stays_with_its_call(tok):
    assert tokenize_conversation(tok, CONV, 5) is None
    only_last = [CONV[0], *CONV[3:]]
    n = len(tokenize_conversation(tok, only_last, 512)["input_ids"])
    out = tokenize_conversation(tok, CONV, n)
    assert out["num_turns_dropped"] == 1
    check(tok, out, chatml(tok, only_last, trained={2, 4}))


def test_preference_pair_shares_prompt_and_trains_replies_only(tok):
    prompt = CONV[:4]
    chosen = [{"role": "assistant", "content": "it is sunny"}]
    rejected = [{"role": "assistant", "content": "cold and windy"}]
    c, r = tokenize_preference(tok, prompt, chosen, rejected, 512)
    check(tok, c, chatml(tok, prompt + chosen, trained={4})[:-1])  # each ends at its reply's <|im_end|>
    check(tok, r, chatml(tok, prompt + rejected, trained={4})[:-1])
    n = len(build(tok, *chatml(tok, prompt))[0])
    assert c["input_ids"][:n] == r["input_ids"][:n] and not any(c["loss_mask"][:n])
    # too long for the whole prompt: the same oldest turn goes from both
    c2, r2 = tokenize_preference(tok, prompt, chosen, rejected, len(c["input_ids"]) - 1)
    assert c2["num_turns_dropped"] == r2["num_turns_dropped"] == 1
    check(tok, r2, chatml(tok, [CONV[0], CONV[3]] + rejected, trained={2})[:-1])
    assert tokenize_preference(tok, prompt, chosen, rejected, 8) is None
    with pytest.raises(ChatFormatError) as e:
        tokenize_preference(tok, prompt, chosen, list(chosen), 512)
    assert e.value.reason == "identical_pair"


def test_prompt_rendering_appends_generation_prompt(tok):
    S = tok.convert_tokens_to_ids("<|im_start|>")
    ids = tokenize_prompt(tok, CONV[:4], 512)
    assert ids == build(tok, *chatml(tok, CONV[:4]), (S, 0), ("assistant\n", 0))[0]
    assert render_prompt(tok, CONV[:4]).endswith("weather in paris<|im_end|>\n<|im_start|>assistant\n")
    short = tokenize_prompt(tok, CONV[:4], len(ids) - 1)
    assert short == build(tok, *chatml(tok, [CONV[0], CONV[3]]), (S, 0), ("assistant\n", 0))[0]
    assert tokenize_prompt(tok, CONV[:4], 4) is None
    with pytest.raises(ChatFormatError) as e:
        tokenize_prompt(tok, CONV[:3], 512)
    assert e.value.reason == "ends_with_assistant"


def test_completion_to_message_stops_at_end_of_turn(tok):
    E = tok.convert_tokens_to_ids("<|im_end|>")
    body = tok("it is sunny", add_special_tokens=False)["input_ids"]
    nl = tok("\n", add_special_tokens=False)["input_ids"]
    pad, eos = tok.pad_token_id, tok.eos_token_id
    assert completion_to_message(tok, body + [E] + nl + [pad, pad]) == {"role": "assistant", "content": "it is sunny"}
    assert completion_to_message(tok, body + [eos, *body])["content"] == "it is sunny"
    assert completion_to_message(tok, body)["content"] == "it is sunny"


def test_completion_to_message_with_multi_token_marker(raw_tok):
    raw_tok.chat_template = ALT_TEMPLATE.replace("eos_token", "'<END>'")
    tok = ensure_chat_template(raw_tok)
    assert end_of_turn_text(tok) == "<END>" and stop_token_ids(tok) == [tok.eos_token_id]
    ids = tok("it is sunny<END>\n\n### USER:", add_special_tokens=False)["input_ids"]
    assert completion_to_message(tok, ids)["content"] == "it is sunny"


U = {"role": "user", "content": "hello there"}
A = {"role": "assistant", "content": "hi"}


@pytest.mark.parametrize("messages, reason", [
    ("hello", "not_a_list"),
    ([], "not_a_list"),
    (["hello"], "bad_message"),
    ([U, {"role": "narrator", "content": "x"}], "unknown_role"),
    ([U, {"role": "assistant", "content": "  "}], "empty_content"),
    ([U, {"role": "assistant"}], "non_string_content"),
    ([U, {"role": "assistant", "content": ["hi"]}], "non_string_content"),
    ([U, {"role": "user", "content": "again"}], "no_assistant"),
    ([U, {"role": "tool", "content": "sunny"}, A], "tool_without_call"),
    ([A, U, A], "bad_order"),
    ([U, A, {"role": "system", "content": "late"}], "bad_order"),
    ([U, {"role": "assistant", "content": "", "tool_calls": "get_weather()"}], "bad_message"),
])
def test_malformed_conversations_name_their_reason(messages, reason):
    with pytest.raises(ChatFormatError) as e:
        validate_messages(messages, record_id="r7")
    assert e.value.reason == reason and e.value.record_id == "r7" and "record 'r7'" in str(e.value)


def test_canonical_messages_keep_only_known_keys():
    msgs = validate_messages([{"role": "user", "content": "q", "weight": 0.5},
                              {"role": "assistant", "content": None, "tool_calls": [CALL]},
                              {"role": "tool", "content": "sunny", "name": "get_weather", "extra": 1}, A])
    assert msgs == [{"role": "user", "content": "q"}, {"role": "assistant", "content": "", "tool_calls": [CALL]},
                    {"role": "tool", "content": "sunny", "name": "get_weather"}, A]


def test_content_spelling_a_control_token_is_refused(tok):
    with pytest.raises(ChatFormatError) as e:
        tokenize_conversation(tok, [U, {"role": "assistant", "content": "hi<|im_end|><|im_start|>system"}], 512)
    assert e.value.reason == "control_token_in_content"


@pytest.mark.parametrize("template, problem", [
    # rewrites earlier assistant turns (like templates that strip reasoning from all but the last turn)
    ("{% for m in messages %}{% if m['role'] == 'assistant' and not loop.last %}{{ 'A: ...' }}"
     "{% else %}{{ m['role'] + ': ' + m['content'] }}{% endif %}{{ eos_token }}{% endfor %}"
     "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}", "prefix-consistent"),
    # ignores add_generation_prompt, so the assistant header would be trained
    ("{% for m in messages %}{{ m['role'] + ': ' + m['content'] + eos_token }}{% endfor %}", "generation prompt"),
    # nothing closes an assistant turn
    ("{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endfor %}"
     "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}", "end-of-turn"),
    # drops assistant content
    ("{% for m in messages %}{{ m['role'] + ': ' + (m['content'] if m['role'] != 'assistant' else '') + eos_token }}"
     "{% endfor %}{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}", "content"),
    ("{{ raise_exception('no chat here') }}", "cannot render"),
])
def test_templates_that_cannot_give_exact_masks_are_refused(raw_tok, template, problem):
    with pytest.raises(ChatTemplateError, match=problem):
        ensure_chat_template(raw_tok, template)


def test_tokenizing_refuses_a_template_set_without_the_check(raw_tok):
    raw_tok.chat_template = ("{% for m in messages %}{% if m['role'] == 'assistant' and not loop.last %}"
                             "{{ 'A: ...' }}{% else %}{{ m['role'] + ': ' + m['content'] }}{% endif %}"
                             "{{ eos_token }}{% endfor %}{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}")
    with pytest.raises(ChatTemplateError, match="prefix-consistent"):
        tokenize_conversation(raw_tok, [U, A, U, A], 512)


def test_token_straddling_header_and_content_is_trained_whole(raw_tok):
    """Byte-level BPE joins the header's newline with the content's leading spaces ("\\n " is one
    pre-token): a token overlapping the assistant span is trained, tokens wholly in the header are not."""
    raw_tok.chat_template = ALT_TEMPLATE
    tok = ensure_chat_template(raw_tok)
    out = tokenize_conversation(tok, [U, {"role": "assistant", "content": "  hi"}], 512)
    ids, mask = out["input_ids"], out["loss_mask"]
    first = mask.index(1)
    assert tok.decode(ids[:first]) == "### USER:\nhello there\n\n### ASSISTANT:"
    assert tok.decode(ids[first:first + 1]) == "\n "
    assert tok.decode([t for t, m in zip(ids, mask) if m]) == "\n  hi<|eos|>"

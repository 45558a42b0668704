"""Conversations (``messages`` lists) to token ids and assistant-only loss masks, for every post-training stage.

A conversation is a list of ``{"role", "content"}`` dicts; roles are ``system``, ``user``, ``assistant``
and ``tool``. It is rendered with the tokenizer's chat template (see :mod:`orchestrator.data.chat_template`
for the default and how assistant spans are located) and tokenized once, as a whole, with offsets;
a token is trained when its characters overlap an assistant span (content + end-of-turn marker), so
role headers, system, user and tool tokens and the separators between turns carry no loss.

Conventions match :mod:`orchestrator.rlhf.batches`: ``loss_mask[t] = 1`` where token ``t`` itself is
trained (the trainer shifts), and ``labels`` is ``input_ids`` with ``-100`` wherever no loss is taken.

Length policy: a conversation longer than ``seq_len`` loses whole turns from the oldest (a turn starts
at a user message; leading system messages are kept) until it fits; no turn is ever cut part-way. One
that cannot fit, or that has no trained assistant message left, gives ``None`` for the caller to drop
and count.
"""

from __future__ import annotations

from typing import Any, Literal, Sequence, TypedDict

from orchestrator.data.chat_template import assistant_turn_span, end_of_turn_text, render, stop_token_ids

ROLES = ("system", "user", "assistant", "tool")
IGNORE_INDEX = -100
TrainOn = Literal["all_assistant", "last_assistant"]
TRAIN_ON = ("all_assistant", "last_assistant")


class ChatFormatError(ValueError):
    """A malformed conversation record, to be quarantined under ``reason`` and counted, never fatal.

    Args:
        reason: short stable code (``unknown_role``, ``empty_content``, ``non_string_content``,
            ``no_assistant``, ``tool_without_call``, ``not_a_list``, ``bad_message``, ``bad_order``,
            ``control_token_in_content``, ``ends_with_assistant``, ``no_user``, ``identical_pair``,
            ``prompt_mismatch``, ``missing_field``).
        detail: what exactly is wrong.
        record_id: id of the offending record, when known.
    """

    def __init__(self, reason: str, detail: str, record_id: Any = None) -> None:
        self.reason = reason
        self.detail = detail
        self.record_id = record_id
        where = f"record {record_id!r}: " if record_id is not None else ""
        super().__init__(f"{where}{reason}: {detail}")


class ChatExample(TypedDict):
    """One tokenized conversation."""

    input_ids: list[int]
    labels: list[int]  # input_ids, with IGNORE_INDEX where no loss is taken
    loss_mask: list[int]  # 1 where the token is trained
    num_turns_dropped: int  # oldest turns removed to fit seq_len


def _message(m: Any, i: int, record_id: Any) -> dict:
    """The canonical form of one message: role, content and (assistant) tool_calls / (tool) name, id."""
    if not isinstance(m, dict) or "role" not in m:
        raise ChatFormatError("bad_message", f"message {i} is not a dict with a 'role'", record_id)
    role = m["role"]
    if role not in ROLES:
        raise ChatFormatError("unknown_role", f"message {i} has role {role!r}; expected one of {ROLES}", record_id)
    content, calls = m.get("content"), m.get("tool_calls") if role == "assistant" else None
    if calls is not None and not (isinstance(calls, list) and all(isinstance(c, dict) for c in calls)):
        raise ChatFormatError("bad_message", f"message {i} has tool_calls that are not a list of dicts", record_id)
    if content is None and calls:
        content = ""
    if not isinstance(content, str):
        raise ChatFormatError("non_string_content", f"message {i} ({role}) has {type(content).__name__} content",
                              record_id)
    if not content.strip() and not calls:
        raise ChatFormatError("empty_content", f"message {i} ({role}) has empty content", record_id)
    out = {"role": role, "content": content}
    if calls:
        out["tool_calls"] = calls
    for key in ("name", "tool_call_id") if role == "tool" else ():
        if isinstance(m.get(key), str):
            out[key] = m[key]
    return out


def validate_messages(messages: Any, record_id: Any = None, require_assistant: bool = True) -> list[dict]:
    """Check a conversation and return it in canonical form (unknown extra keys dropped).

    Rules: a non-empty list of messages with a known role and string content (empty only for an
    assistant message that carries ``tool_calls``); system messages first; the first other message is
    a user message; a tool message follows an assistant message (its call) or another tool message.

    Args:
        messages: the raw ``messages`` value of a record.
        record_id: named in the error.
        require_assistant: at least one assistant message is needed (sft, preference replies).

    Raises:
        ChatFormatError: the first rule broken, with its reason code.
    """
    if not isinstance(messages, list) or not messages:
        raise ChatFormatError("not_a_list", "messages must be a non-empty list of {role, content}", record_id)
    out = [_message(m, i, record_id) for i, m in enumerate(messages)]
    roles = [m["role"] for m in out]
    first = next((i for i, r in enumerate(roles) if r != "system"), len(roles))
    if "system" in roles[first:]:
        raise ChatFormatError("bad_order", f"system message at index {roles.index('system', first)} after "
                              "other messages (system messages come first)", record_id)
    if first < len(roles) and roles[first] != "user":
        raise ChatFormatError("bad_order", f"the first non-system message is {roles[first]!r}, not 'user'", record_id)
    for i, r in enumerate(roles):
        if r == "tool" and roles[i - 1] not in ("assistant", "tool"):
            raise ChatFormatError("tool_without_call", f"tool message {i} does not follow an assistant call",
                                  record_id)
    if require_assistant and "assistant" not in roles:
        raise ChatFormatError("no_assistant", "the conversation has no assistant message", record_id)
    return out


def _turns(messages: Sequence[dict]) -> tuple[list[dict], list[list[dict]]]:
    """Leading system messages, and the rest grouped into turns that each start at a user message."""
    lead = 0
    while lead < len(messages) and messages[lead]["role"] == "system":
        lead += 1
    groups: list[list[dict]] = []
    for m in messages[lead:]:
        if m["role"] == "user" or not groups:
            groups.append([])
        groups[-1].append(m)
    return list(messages[:lead]), groups


def _check_no_control_tokens(tokenizer: Any, messages: Sequence[dict]) -> None:
    """Refuse content that spells a special token: it would be encoded as the control token itself."""
    added = (t.content for t in tokenizer.added_tokens_decoder.values() if t.special)
    specials = sorted({t for t in (*tokenizer.all_special_tokens, *added) if t})
    for i, m in enumerate(messages):
        text = m["content"] + "".join(str(c) for c in m.get("tool_calls", ()))
        hit = next((t for t in specials if t in text), None)
        if hit is not None:
            raise ChatFormatError("control_token_in_content", f"message {i} contains the control token {hit!r}")


def encode_rendered(tokenizer: Any, messages: Sequence[dict], trained: Sequence[int]) -> tuple[list[int], list[int]]:
    """Token ids of the whole rendered conversation and the mask of tokens overlapping trained spans.

    Args:
        tokenizer: a fast tokenizer with a chat template.
        messages: canonical messages.
        trained: indices of the assistant messages that carry loss.

    Returns:
        ``(input_ids, loss_mask)``.
    """
    full = render(tokenizer, messages)
    spans = [assistant_turn_span(tokenizer, messages, i, full) for i in sorted(trained)]
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids, mask, k = list(enc["input_ids"]), [], 0
    for start, end in enc["offset_mapping"]:
        while k < len(spans) and start >= spans[k][1]:
            k += 1
        mask.append(int(k < len(spans) and max(end, start + 1) > spans[k][0]))
    return ids, mask


def _example(ids: list[int], mask: list[int], dropped: int) -> ChatExample:
    labels = [t if m else IGNORE_INDEX for t, m in zip(ids, mask)]
    return {"input_ids": ids, "labels": labels, "loss_mask": mask, "num_turns_dropped": dropped}


def _trained(messages: Sequence[dict], train_on: str, start: int = 0) -> list[int]:
    idx = [i for i, m in enumerate(messages) if m["role"] == "assistant" and i >= start]
    return idx[-1:] if train_on == "last_assistant" else idx


def tokenize_conversation(tokenizer: Any, messages: Sequence[dict], seq_len: int,
                          train_on: TrainOn = "all_assistant", record_id: Any = None) -> ChatExample | None:
    """Token ids and assistant-only loss mask of one conversation, fitted to ``seq_len``.

    Args:
        tokenizer: a fast tokenizer whose chat template passed ``ensure_chat_template``.
        messages: the conversation (validated here).
        seq_len: maximum number of tokens.
        train_on: ``all_assistant`` trains every assistant message, ``last_assistant`` only the last one.
        record_id: named in errors.

    Returns:
        The example, or ``None`` when even the last turn (with the system messages) exceeds ``seq_len``.

    Raises:
        ChatFormatError: a malformed conversation (the caller quarantines it).
        ChatTemplateError: the template cannot give exact masks.
    """
    if train_on not in TRAIN_ON:
        raise ValueError(f"train_on must be one of {TRAIN_ON}, got {train_on!r}")
    msgs = validate_messages(messages, record_id)
    _check_no_control_tokens(tokenizer, msgs)
    lead, groups = _turns(msgs)
    for dropped in range(len(groups)):
        cand = lead + [m for g in groups[dropped:] for m in g]
        trained = _trained(cand, train_on)
        if not trained:
            return None
        ids, mask = encode_rendered(tokenizer, cand, trained)
        if len(ids) <= seq_len:
            return _example(ids, mask, dropped)
    return None


def tokenize_preference(tokenizer: Any, prompt: Sequence[dict], chosen: Sequence[dict], rejected: Sequence[dict],
                        seq_len: int, record_id: Any = None) -> tuple[ChatExample, ChatExample] | None:
    """Chosen and rejected sequences of a preference pair sharing one prompt conversation.

    Both sequences render ``prompt + reply``; the loss mask covers the assistant messages of the reply
    only. Each sequence ends at its reply's end-of-turn marker: what the template writes after it (the
    ``\n`` separator of the default) is cut, so a reward model's score position (the last token) is the
    marker, as it is for a PPO response, which stops there. When either is too long, the same oldest
    prompt turns are dropped from both, so they keep sharing their prompt tokens.

    Args:
        tokenizer: a fast tokenizer with a checked chat template.
        prompt: the shared conversation before the replies (ends with a user or tool message).
        chosen: the preferred reply, a list of messages starting with an assistant message.
        rejected: the other reply, same form.
        seq_len: maximum number of tokens of each sequence.
        record_id: named in errors.

    Returns:
        ``(chosen, rejected)`` examples, or ``None`` when they cannot fit.

    Raises:
        ChatFormatError: malformed messages, a reply that does not start and end with an assistant
            message, or identical replies.
    """
    prompt = prompt_messages(prompt, record_id)
    pair = []
    for name, reply in (("chosen", chosen), ("rejected", rejected)):
        check_reply(reply, name, record_id)
        pair.append(validate_messages(list(prompt) + reply, record_id))
    if pair[0] == pair[1]:
        raise ChatFormatError("identical_pair", "chosen and rejected are identical", record_id)
    for msgs in pair:
        _check_no_control_tokens(tokenizer, msgs)
    lead, groups = _turns(pair[0][: len(prompt)])
    for dropped in range(len(groups)):
        head = lead + [m for g in groups[dropped:] for m in g]
        out = []
        for msgs in pair:
            cand = head + msgs[len(prompt):]
            ids, mask = encode_rendered(tokenizer, cand, _trained(cand, "all_assistant", start=len(head)))
            end = len(mask) - mask[::-1].index(1)  # just after the last trained token: the end-of-turn marker
            out.append((ids[:end], mask[:end]))
        if all(len(ids) <= seq_len for ids, _ in out):
            return _example(*out[0], dropped), _example(*out[1], dropped)
    return None


def check_reply(reply: Any, name: str, record_id: Any = None) -> None:
    """A preference reply is a message list that starts with an assistant message and ends with one
    (tool calls and results may sit between): the sequence's last trained token is then its end of turn.

    Raises:
        ChatFormatError: ``no_assistant`` when it does not start with an assistant message,
            ``bad_order`` when it ends with another role.
    """
    if not isinstance(reply, list) or not reply or not isinstance(reply[0], dict) \
            or reply[0].get("role") != "assistant":
        raise ChatFormatError("no_assistant", f"{name} must be a list of messages starting with an assistant "
                              "message", record_id)
    if not isinstance(reply[-1], dict) or reply[-1].get("role") != "assistant":
        raise ChatFormatError("bad_order", f"{name} must end with an assistant message (not a tool result)",
                              record_id)


def prompt_messages(messages: Sequence[dict], record_id: Any = None) -> list[dict]:
    """Validate a prompt conversation: it must not end with an assistant message (the model answers next)."""
    msgs = validate_messages(messages, record_id, require_assistant=False)
    if not any(m["role"] == "user" for m in msgs):
        raise ChatFormatError("no_user", "a prompt conversation needs a user message", record_id)
    if msgs[-1]["role"] == "assistant":
        raise ChatFormatError("ends_with_assistant", "a prompt conversation must end with a user or tool message",
                              record_id)
    return msgs


def render_prompt(tokenizer: Any, messages: Sequence[dict]) -> str:
    """Text of a prompt conversation with the generation prompt appended (e.g. for a vLLM engine)."""
    return render(tokenizer, prompt_messages(messages), add_generation_prompt=True)


def tokenize_prompt(tokenizer: Any, messages: Sequence[dict], max_tokens: int,
                    record_id: Any = None) -> list[int] | None:
    """Token ids of a prompt conversation plus the generation prompt, for PPO/GRPO rollouts.

    Oldest turns are dropped (system kept) until it fits ``max_tokens``; ``None`` when even the last
    turn does not fit.

    Raises:
        ChatFormatError: a malformed prompt conversation.
    """
    msgs = prompt_messages(messages, record_id)
    _check_no_control_tokens(tokenizer, msgs)
    lead, groups = _turns(msgs)
    for dropped in range(len(groups)):
        cand = lead + [m for g in groups[dropped:] for m in g]
        text = render(tokenizer, cand, add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) <= max_tokens:
            return list(ids)
    return None


def completion_to_message(tokenizer: Any, response_ids: Sequence[int]) -> dict:
    """A generated response as an assistant message, for reward functions that read conversations.

    The response ends at its first stop token (the end-of-turn marker, EOS or padding); what follows is
    dropped and no control token is kept in the content.

    Args:
        tokenizer: the tokenizer with the chat template used for the prompt.
        response_ids: generated token ids (without the prompt).

    Returns:
        ``{"role": "assistant", "content": text}``.
    """
    stops = set(stop_token_ids(tokenizer))
    if tokenizer.pad_token_id is not None:
        stops.add(tokenizer.pad_token_id)
    ids = list(response_ids)
    cut = next((i for i, t in enumerate(ids) if t in stops), len(ids))
    text = tokenizer.decode(ids[:cut], skip_special_tokens=False)
    marker = end_of_turn_text(tokenizer)
    if marker and marker in text:
        text = text[: text.index(marker)]
    return {"role": "assistant", "content": text}

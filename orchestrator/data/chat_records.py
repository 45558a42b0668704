"""Raw conversation records to the canonical chat form of each records format.

Canonical forms (messages validated by :func:`orchestrator.data.chat.validate_messages`):

- ``sft``: ``{"messages": [...]}`` with at least one assistant message.
- ``preference``: ``{"prompt": [...], "chosen": [...], "rejected": [...]}``; ``prompt`` is the shared
  conversation (ends with a user or tool message), ``chosen``/``rejected`` the two replies, each a
  message list starting and ending with an assistant message (tool calls and results may sit between).
- ``prompts``: ``{"prompt": [...]}`` ending with a user or tool message.

Accepted inputs: sft and prompts records carry a ``messages`` list (a prompts record's trailing
assistant messages, e.g. reference answers of an sft set, are removed). Preference records carry
``chosen``/``rejected`` either as whole conversations that share everything before the replies, or as
replies (a string, one message or a message list) beside a shared ``prompt`` (a string, a message list)
or ``messages`` conversation. Every problem raises :class:`~orchestrator.data.chat.ChatFormatError`
with a reason code, for the caller to quarantine and count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator.data.chat import ChatFormatError, check_reply, prompt_messages, validate_messages


@dataclass(frozen=True)
class ChatFields:
    """Names of a record's conversation fields."""

    messages: str = "messages"  # the conversation (sft, prompts; preference: the shared prompt)
    prompt: str = "prompt"  # preference/prompts: shared prompt, a string or a message list
    chosen: str = "chosen"  # preference: preferred reply or whole conversation
    rejected: str = "rejected"  # preference: dispreferred reply or whole conversation


def is_chat_record(record: dict, fmt: str, fields: ChatFields = ChatFields()) -> bool:
    """Whether ``record`` is in conversation form (rather than the flat string fields of ``fmt``)."""
    if isinstance(record.get(fields.messages), list):
        return True
    if fmt == "preference":
        return any(isinstance(record.get(f), (list, dict)) for f in (fields.prompt, fields.chosen, fields.rejected))
    return isinstance(record.get(fields.prompt), list)


def _field(record: dict, name: str, record_id: Any) -> Any:
    if name not in record or record[name] is None:
        raise ChatFormatError("missing_field", f"the record has no {name!r} field", record_id)
    return record[name]


def _as_messages(value: Any, role: str) -> Any:
    """A string becomes one ``role`` message, a dict a one-message list; anything else is left as is."""
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, dict):
        return [value]
    return value


def sft_record(record: dict, fields: ChatFields = ChatFields(), record_id: Any = None) -> dict:
    """Canonical sft record ``{"messages": [...]}``."""
    return {"messages": validate_messages(_field(record, fields.messages, record_id), record_id)}


def prompts_record(record: dict, fields: ChatFields = ChatFields(), record_id: Any = None) -> dict:
    """Canonical prompts record ``{"prompt": [...]}`` (trailing assistant messages removed)."""
    name = fields.messages if fields.messages in record else fields.prompt
    msgs = validate_messages(_as_messages(_field(record, name, record_id), "user"), record_id,
                             require_assistant=False)
    while msgs and msgs[-1]["role"] == "assistant":
        msgs.pop()
    return {"prompt": prompt_messages(msgs, record_id)}


def _split_pair(chosen: list, rejected: list, record_id: Any) -> tuple[list, list, list]:
    """Whole chosen/rejected conversations -> (shared prompt, chosen reply, rejected reply)."""
    k = 0
    while k < min(len(chosen), len(rejected)) and chosen[k] == rejected[k]:
        k += 1
    if k == len(chosen) == len(rejected):
        raise ChatFormatError("identical_pair", "chosen and rejected are identical", record_id)
    if k == len(chosen) or k == len(rejected) or chosen[k]["role"] != "assistant" \
            or rejected[k]["role"] != "assistant":
        raise ChatFormatError("prompt_mismatch", f"chosen and rejected differ at message {k}, which is not the "
                              "start of an assistant reply in both", record_id)
    return chosen[:k], chosen[k:], rejected[k:]


def preference_record(record: dict, fields: ChatFields = ChatFields(), record_id: Any = None) -> dict:
    """Canonical preference record ``{"prompt": [...], "chosen": [...], "rejected": [...]}``."""
    chosen = _as_messages(_field(record, fields.chosen, record_id), "assistant")
    rejected = _as_messages(_field(record, fields.rejected, record_id), "assistant")
    shared = record.get(fields.messages, record.get(fields.prompt))
    if shared is None:
        chosen = validate_messages(chosen, record_id)
        rejected = validate_messages(rejected, record_id)
        prompt, chosen, rejected = _split_pair(chosen, rejected, record_id)
        check_reply(chosen, fields.chosen, record_id)
        check_reply(rejected, fields.rejected, record_id)
    else:
        prompt = prompt_messages(_as_messages(shared, "user"), record_id)
        n = len(prompt)
        check_reply(chosen, fields.chosen, record_id)
        check_reply(rejected, fields.rejected, record_id)
        chosen = validate_messages(prompt + chosen, record_id)[n:]
        rejected = validate_messages(prompt + rejected, record_id)[n:]
        if chosen == rejected:
            raise ChatFormatError("identical_pair", "chosen and rejected are identical", record_id)
    return {"prompt": prompt_messages(prompt, record_id), "chosen": chosen, "rejected": rejected}


def to_chat_record(record: dict, fmt: str, fields: ChatFields = ChatFields(), record_id: Any = None) -> dict:
    """Canonical chat form of ``record`` for records format ``fmt`` (``sft``, ``preference``, ``prompts``).

    Raises:
        ChatFormatError: the record is malformed (reason code for quarantine counts).
        ValueError: ``fmt`` is not a records format.
    """
    convert = {"sft": sft_record, "preference": preference_record, "prompts": prompts_record}.get(fmt)
    if convert is None:
        raise ValueError(f"no chat form for records format {fmt!r}")
    return convert(record, fields, record_id)

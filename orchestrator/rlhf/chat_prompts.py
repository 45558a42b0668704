"""Conversation prompts for the RL roles (ppo, grpo): rendered with the generation prompt, generation
stopped at the template's end of turn, responses read back as assistant turns for reward functions.

A prompts dataset may hold flat prompts (strings) or conversations (``prompt`` message lists; an sft
dataset's ``messages`` with the trailing assistant replies removed). Conversations are rendered with
the policy tokenizer's chat template plus its generation prompt (``<|im_start|>assistant\\n`` for the
default), oldest turns dropped (system kept) to fit the prompt budget.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from orchestrator.config.errors import ConfigError
from orchestrator.data.chat import ChatFormatError, completion_to_message, tokenize_prompt
from orchestrator.data.chat_records import prompts_record
from orchestrator.data.chat_template import stop_token_ids


def _conversation(record: dict) -> Optional[list]:
    if isinstance(record.get("prompt"), list):
        return record["prompt"]
    if isinstance(record.get("messages"), list):
        return prompts_record({"messages": record["messages"]}, record_id=record.get("id"))["prompt"]
    return None


def rollout_records(tok: Any, records: Sequence[dict], max_prompt_tokens: int,
                    key: str = "model.pretrained") -> tuple[list[dict], bool, int]:
    """The records with ``prompt`` set to the text to generate from: ``(records, any conversations,
    conversations dropped)``. The other fields stay (reward functions read them).

    A conversation becomes the exact text of its fitted token ids (so encoding it again gives those
    ids); one that cannot fit ``max_prompt_tokens`` or is malformed is dropped and counted.

    Raises:
        ConfigError: the records hold conversations but the policy's tokenizer has no chat template.
    """
    out: list[dict] = []
    chat, dropped = False, 0
    for r in records:
        conv = _conversation(r)
        if conv is None:
            out.append(dict(r))
            continue
        if not chat and not getattr(tok, "chat_template", None):
            raise ConfigError(key, "the prompts are conversations but the policy's tokenizer has no chat template",
                              "start from an sft export trained on conversations (it carries the template)")
        chat = True
        try:
            ids = tokenize_prompt(tok, conv, max_prompt_tokens, r.get("id"))
        except ChatFormatError:
            ids = None
        if ids is None:
            dropped += 1
        else:
            out.append({**{k: v for k, v in r.items() if k != "messages"},
                        "prompt": tok.decode(ids, skip_special_tokens=False)})
    return out, chat, dropped


def rollout_prompts(tok: Any, records: Sequence[dict], max_prompt_tokens: int,
                    key: str = "model.pretrained") -> tuple[list[str], bool, int]:
    """Only the prompt texts of :func:`rollout_records`: ``(texts, any conversations, conversations dropped)``."""
    kept, chat, dropped = rollout_records(tok, records, max_prompt_tokens, key)
    return [r["prompt"] for r in kept], chat, dropped


def generation_stop_ids(tok: Any, chat: bool) -> list[int]:
    """Token ids that end a response: the end-of-turn marker and EOS for conversations, else EOS."""
    return stop_token_ids(tok) if chat else [tok.eos_token_id]


def response_text(tok: Any, response_ids: Sequence[int]) -> str:
    """A generated response as the content of its assistant turn (stop token and what follows removed)."""
    return completion_to_message(tok, response_ids)["content"]

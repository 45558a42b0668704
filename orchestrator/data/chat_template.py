"""Chat templates: the project's default (ChatML-style), choosing a tokenizer's template, and rendering a
conversation into text with the character span of every assistant turn.

Spans are derived from the template itself, never from hard-coded markers: assistant message ``i`` is
trained from the end of ``render(messages[:i], add_generation_prompt=True)`` (the role header is then
behind us) to the end of ``render(messages[:i + 1])`` with trailing whitespace removed, which leaves the
content plus the template's end-of-turn marker (``<|im_end|>``, ``<|eot_id|>``, ``</s>``...). That only
holds for templates whose renderings of a conversation's prefixes are prefixes of each other, so every
rendering is checked and a template that breaks the rule is refused with :class:`ChatTemplateError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from orchestrator.config.errors import ConfigError

#: ChatML-style default for tokenizers without a template of their own (a tokenizer that data_prep
#: trains, a base model). Every message is ``<|im_start|>{role}\n{content}<|im_end|>\n``; an assistant
#: message's ``tool_calls`` follow its content as ``<tool_call>{json}</tool_call>`` lines; the
#: generation prompt is ``<|im_start|>assistant\n``. No BOS, as in pretraining. ``<|im_end|>`` closes
#: every turn and is the token the model learns to stop on.
DEFAULT_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is defined and message['content'] -%}{{- message['content'] -}}{%- endif -%}"
    "{%- if message['tool_calls'] is defined and message['tool_calls'] -%}"
    "{%- for call in message['tool_calls'] -%}"
    "{%- if not loop.first or (message['content'] is defined and message['content']) -%}{{- '\\n' -}}{%- endif -%}"
    "{{- '<tool_call>' + (call['function'] if call['function'] is defined else call) | tojson + '</tool_call>' -}}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

#: Control tokens the default template writes; added to a tokenizer that lacks them, so each is one id.
DEFAULT_TEMPLATE_TOKENS = ("<|im_start|>", "<|im_end|>")

# Two exchanges, so a template that rewrites earlier turns is caught; no system message (some refuse it).
_PROBE = [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "PROBE_ONE"},
          {"role": "user", "content": "Q2"}, {"role": "assistant", "content": "PROBE_TWO"}]


class ChatTemplateError(ValueError):
    """A chat template that cannot give exact assistant-token masks (a configuration problem, not a record's)."""


def load_chat_template(template: str, key: str = "data.chat_template") -> str:
    """A Jinja template given inline or as a file path.

    Args:
        template: the template text (recognised by ``{{`` or ``{%``) or the path of a file holding it.
        key: config key named in the error.

    Raises:
        ConfigError: the value is neither Jinja text nor a readable file.
    """
    if "{{" in template or "{%" in template:
        return template
    path = Path(template).expanduser()
    if not path.is_file():
        raise ConfigError(key, f"{template!r} is neither a Jinja template nor an existing file",
                          "give the template text (with {{ }} / {% %}) or the path of a .jinja file")
    return path.read_text(encoding="utf-8")


def ensure_chat_template(tokenizer: Any, template: str | None = None, key: str = "data.chat_template") -> Any:
    """Give ``tokenizer`` the chat template to train and export with (in place).

    Precedence: an explicit ``template`` (string or file) overrides; otherwise the tokenizer's own
    template is kept; otherwise :data:`DEFAULT_CHAT_TEMPLATE`. When the default is used, its control
    tokens are added as special tokens if missing, so ``len(tokenizer)`` can grow: the caller resizes
    the model's embeddings to match. ``save_pretrained`` then writes the template with the tokenizer.

    Args:
        tokenizer: a Hugging Face tokenizer (fast).
        template: override, Jinja text or a file path; ``None`` keeps the tokenizer's own.
        key: config key named in errors.

    Returns:
        The same tokenizer, for chaining.

    Raises:
        ConfigError: ``template`` is neither Jinja text nor a file.
        ChatTemplateError: the resulting template cannot give exact masks (see :func:`check_chat_template`).
    """
    if template is not None:
        tokenizer.chat_template = load_chat_template(template, key)
    elif not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    if tokenizer.chat_template == DEFAULT_CHAT_TEMPLATE:
        vocab = tokenizer.get_vocab()
        missing = [t for t in DEFAULT_TEMPLATE_TOKENS if t not in vocab]
        if missing:
            tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    check_chat_template(tokenizer)
    return tokenizer


def render(tokenizer: Any, messages: Sequence[dict], add_generation_prompt: bool = False) -> str:
    """The template's text for ``messages`` (``""`` for no messages)."""
    if not messages:
        return ""
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=add_generation_prompt)


def _prefix_of(prefix: str, text: str, what: str) -> None:
    if not text.startswith(prefix):
        raise ChatTemplateError(
            f"the chat template is not prefix-consistent: rendering {what} is not a prefix of rendering the whole "
            "conversation (the template rewrites earlier turns), so assistant tokens cannot be located exactly; "
            "use a template that renders each turn independently of later ones")


def assistant_turn_span(tokenizer: Any, messages: Sequence[dict], i: int, full: str) -> tuple[int, int]:
    """Character span in ``full`` of assistant message ``i``: its content and end-of-turn marker.

    Args:
        tokenizer: tokenizer with a chat template.
        messages: the conversation; ``messages[i]`` is an assistant message and ``i > 0``.
        i: index of the assistant message.
        full: ``render(tokenizer, messages)``.

    Raises:
        ChatTemplateError: the renderings are not prefix-consistent, the content is not inside its turn,
            or text other than whitespace sits between the generation prompt and the content (a role
            header the generation prompt does not emit would otherwise be trained).
    """
    head = render(tokenizer, messages[:i], add_generation_prompt=True)
    turn = render(tokenizer, messages[: i + 1])
    _prefix_of(render(tokenizer, messages[:i]), head, f"messages[:{i}]")
    _prefix_of(head, turn, f"messages[:{i}] with the generation prompt")
    _prefix_of(turn, full, f"messages[:{i + 1}]")
    body = full[len(head): len(turn)].rstrip()
    content = (messages[i].get("content") or "").strip()
    if content:
        at = body.find(content)
        if at < 0:
            raise ChatTemplateError(f"the chat template does not render assistant message {i}'s content inside "
                                    "its turn (it drops or rewrites assistant content)")
        if body[:at].strip():
            raise ChatTemplateError(
                f"the chat template writes {body[:at].strip()!r} between the generation prompt and assistant "
                f"message {i}'s content; add_generation_prompt must emit the whole assistant header")
    return len(head), len(head) + len(body)


def check_chat_template(tokenizer: Any) -> None:
    """Refuse a template that cannot give exact masks, using a probe conversation.

    Raises:
        ChatTemplateError: the probe fails (see :func:`assistant_turn_span`), or the template leaves no
            end-of-turn marker after an assistant message (the model could never learn to stop).
    """
    try:
        full = render(tokenizer, _PROBE)
    except Exception as e:  # noqa: BLE001 - any Jinja/render failure is a template problem
        raise ChatTemplateError(f"the chat template cannot render a user/assistant exchange: {e}") from e
    spans = [assistant_turn_span(tokenizer, _PROBE, i, full) for i in (1, 3)]
    if any(full[a:b].strip().endswith(_PROBE[i]["content"]) for (a, b), i in zip(spans, (1, 3))):
        raise ChatTemplateError("the chat template writes no end-of-turn marker after an assistant message, "
                                "so a model trained with it cannot learn where to stop")


def end_of_turn_text(tokenizer: Any) -> str:
    """The text the template writes right after an assistant message's content (e.g. ``<|im_end|>``)."""
    full = render(tokenizer, _PROBE)
    start, end = assistant_turn_span(tokenizer, _PROBE, 3, full)
    body, content = full[start:end], _PROBE[3]["content"]
    return body[body.index(content) + len(content):].strip()


def stop_token_ids(tokenizer: Any) -> list[int]:
    """Token ids that end a generated assistant turn: the end-of-turn marker (when it is one token) and EOS."""
    ids = tokenizer(end_of_turn_text(tokenizer), add_special_tokens=False)["input_ids"]
    stops = [ids[0]] if len(ids) == 1 else []
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in stops:
        stops.append(tokenizer.eos_token_id)
    return stops

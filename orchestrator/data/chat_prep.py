"""Stage 1 of data_prep for the records formats (sft, preference, prompts), conversations included.

A record is in chat form when it carries ``data.messages_field`` (or, for preference, message-list
``chosen``/``rejected``; see :func:`orchestrator.data.chat_records.is_chat_record`); it is converted to
its canonical chat record (:func:`orchestrator.data.chat_records.to_chat_record`), every message's
content goes through the same normalisation, language filter and PII scrub as a flat field, and dedup
sees the contents joined. A malformed conversation is quarantined under ``chat_<reason>`` (e.g.
``chat_unknown_role``) and counted, never fatal. Flat records take exactly the path of
:func:`orchestrator.data.partition.process_partition`.

:func:`orchestrator.data.partition.process_partition` calls :func:`record_step` for every record of a
records format; the ``text`` column of a chat record holds its canonical chat record as JSON, which
:func:`orchestrator.data.finalize.finalize_partition` writes as is.
"""

from __future__ import annotations

import json
from typing import Any

from orchestrator.config.data_prep import DataPrepDataConfig
from orchestrator.data.chat import ChatFormatError
from orchestrator.data.chat_records import ChatFields, is_chat_record, to_chat_record
from orchestrator.data.readers import MAX_QUARANTINE_CHARS, Parsed, extract_fields, generated_id
from orchestrator.data.steps import DocResult, DocumentSteps, record_text

CHAT_FORMATS = ("sft", "preference", "prompts")


def chat_fields(cfg: DataPrepDataConfig) -> ChatFields:
    """The conversation field names of the configuration."""
    return ChatFields(messages=cfg.messages_field, prompt=cfg.prompt_field, chosen=cfg.chosen_field,
                      rejected=cfg.rejected_field)


def _messages_of(record: dict) -> list[dict]:
    """Every message of a canonical chat record, in field order (prompt/messages, chosen, rejected)."""
    return [m for k in ("messages", "prompt", "chosen", "rejected") for m in record.get(k) or ()]


def run_chat_steps(steps: DocumentSteps, record: dict) -> tuple[DocResult, dict, int]:
    """Normalisation, language filter and PII scrub of every message content of a canonical chat record.

    Returns:
        The steps' verdict (its ``text``: the contents joined, what dedup compares), the record with
        the processed contents (a new dict; the input is not modified) and the input contents' bytes.
    """
    out = json.loads(json.dumps(record))
    msgs = _messages_of(out)
    names = tuple(str(i) for i in range(len(msgs)))
    flat = {n: m["content"] for n, m in zip(names, msgs)}
    raw = record_text(flat, names)
    res, done = run_record(steps, flat, names, raw)
    for n, m in zip(names, msgs):
        m["content"] = done[n]
    return res, out, len(raw.encode())


def convert(rec: dict, cfg: DataPrepDataConfig, record_id: Any) -> dict:
    """Canonical chat record of a raw record, re-validated (raises :class:`ChatFormatError`)."""
    return to_chat_record(rec, cfg.format, chat_fields(cfg), record_id)


def record_step(parsed: Parsed, cfg: DataPrepDataConfig, steps: DocumentSteps,
                fields: tuple[str, ...]) -> tuple[Parsed, Any, Any, set[str], int]:
    """One parsed record through the per-document steps.

    Returns:
        ``(parsed, DocResult, text column, input fields consumed, input text bytes)``; ``parsed.error``
        is set (and the rest empty) when the record is quarantined.
    """
    raw = parsed.record
    if raw is not None and is_chat_record(raw, cfg.format, chat_fields(cfg)):
        rec = raw if raw.get(cfg.id_field) is not None else {cfg.id_field: generated_id(parsed.source, parsed.offset),
                                                             **raw}
        doc_id = str(rec[cfg.id_field])
        try:
            canonical = convert(rec, cfg, doc_id)
            res, canonical, raw_bytes = run_chat_steps(steps, canonical)
            if res.text is not None:
                # contents emptied by normalisation are refused (canonical field names now)
                canonical = to_chat_record(canonical, cfg.format, ChatFields(), doc_id)
        except ChatFormatError as e:
            dump = json.dumps(raw, ensure_ascii=False, default=str)[:MAX_QUARANTINE_CHARS]
            return Parsed(parsed.source, parsed.offset, error=f"chat_{e.reason}", raw=dump), None, None, set(), 0
        used = {cfg.messages_field, *fields, cfg.response_field}
        return Parsed(parsed.source, parsed.offset, record={**rec, cfg.id_field: doc_id}), res, \
            json.dumps(canonical, ensure_ascii=False), used, raw_bytes
    if parsed.error is None:
        parsed = extract_fields(parsed, cfg.id_field, fields)
    if parsed.error is not None:
        return parsed, None, None, set(), 0
    raw = record_text(parsed.record, fields)
    res, out_fields = run_record(steps, parsed.record, fields, raw)
    return parsed, res, json.dumps(out_fields, ensure_ascii=False), set(fields), len(raw.encode())


def run_record(steps: DocumentSteps, rec: dict[str, Any], fields: tuple[str, ...], raw_text: str):
    """Per-document steps for sft/preference/prompts records: normalise and scrub every field; the
    language filter looks at the joined fields; web-text quality rules are not applied."""
    from orchestrator.data import filters
    from orchestrator.data.steps import DocResult

    cfg = steps.cfg
    out = {f: steps.normalize(rec[f]) for f in fields}
    passed: list[str] = ["normalize"] if cfg.normalize.enabled else []
    sizes = {"normalize": len(record_text(out, fields).encode())} if passed else {}
    stats: dict[str, float] = {}
    if cfg.language.enabled:
        verdict = filters.language(record_text(out, fields), cfg.language)
        stats.update(verdict.stats)
        if not verdict.keep:
            return DocResult(None, "language", verdict.reason, stats, 0, tuple(passed), sizes), out
        passed.append("language")
        sizes["language"] = sizes.get("normalize", len(raw_text.encode()))
    if steps.decontam_on:
        verdict = steps.decontaminate(record_text(out, fields))
        if not verdict.keep:
            return DocResult(None, "decontaminate", verdict.reason, stats, 0, tuple(passed), sizes, verdict.detail), out
        passed.append("decontaminate")
        sizes["decontaminate"] = len(record_text(out, fields).encode())
    replaced = 0
    if cfg.pii.enabled:
        for f in fields:
            out[f], n = steps.scrub(out[f])
            replaced += n
        passed.append("pii")
        sizes["pii"] = len(record_text(out, fields).encode())
    stats["pii_replacements"] = replaced
    return DocResult(record_text(out, fields), None, None, stats, replaced, tuple(passed), sizes), out

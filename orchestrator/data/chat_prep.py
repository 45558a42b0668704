"""Stage 1 of data_prep for the records formats (sft, preference, prompts), conversations included.

A record is in chat form when it carries ``data.messages_field`` (or, for preference, message-list
``chosen``/``rejected``; see :func:`orchestrator.data.chat_records.is_chat_record`); it is converted to
its canonical chat record (:func:`orchestrator.data.chat_records.to_chat_record`), every message's
content goes through the same normalisation, language filter and PII scrub as a flat field, and dedup
sees the contents joined. A malformed conversation is quarantined under ``chat_<reason>`` (e.g.
``chat_unknown_role``) and counted, never fatal. Flat records take exactly the path of
:func:`orchestrator.data.partition.process_partition`.

Outputs are those of ``process_partition`` (same files, schema and marker), so stages 2-4 are shared;
the ``text`` column of a chat record holds its canonical chat record as JSON, which
:func:`orchestrator.data.finalize.finalize_partition` writes as is.

Lead note: this loop mirrors ``process_partition``'s; fold :func:`record_step` into it as a per-record
hook once the reader changes landing there are merged, and delete this copy.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from orchestrator.config.data_prep import DataPrepDataConfig
from orchestrator.core.files import atomic_write_text
from orchestrator.data.chat import ChatFormatError
from orchestrator.data.chat_records import ChatFields, is_chat_record, to_chat_record
from orchestrator.data.partition import BATCH_ROWS, DOC_SCHEMA, _run_record, _StepCounter, part_name, text_fields
from orchestrator.data.readers import MAX_QUARANTINE_CHARS, Parsed, Partition, extract_fields, generated_id, read_partition
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
    res, done = _run_record(steps, flat, names, raw)
    for n, m in zip(names, msgs):
        m["content"] = done[n]
    return res, out, len(raw.encode())


def convert(rec: dict, cfg: DataPrepDataConfig, record_id: Any) -> dict:
    """Canonical chat record of a raw record, re-validated (raises :class:`ChatFormatError`)."""
    return to_chat_record(rec, cfg.format, chat_fields(cfg), record_id)


def _quarantine(qf: Any, parsed: Parsed, reason: str, quarantine: Counter[str]) -> None:
    quarantine[reason] += 1
    qf.write(json.dumps({"source": parsed.source, "offset": parsed.offset, "reason": reason,
                         "raw": parsed.raw}, ensure_ascii=False) + "\n")


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
    res, out_fields = _run_record(steps, parsed.record, fields, raw)
    return parsed, res, json.dumps(out_fields, ensure_ascii=False), set(fields), len(raw.encode())


def process_records_partition(part: Partition, cfg: DataPrepDataConfig, work: str | Path) -> dict[str, Any]:
    """Stage 1 on one partition of a records format (same outputs as ``process_partition``)."""
    work = Path(work)
    name = part_name(part.index)
    dirs = {k: work / "stage1" / k for k in ("docs", "removed", "quarantine", "stats", "filterstats", "done")}
    marker = dirs["done"] / name
    if marker.exists():
        return json.loads((dirs["stats"] / f"{name}.json").read_text()) | {"skipped": True}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    steps = DocumentSteps(cfg)
    enabled = [s for s in steps.enabled_steps() if s not in ("exact_dedup", "near_dedup")]
    fields = text_fields(cfg)
    counter, quarantine = _StepCounter(), Counter()
    stat_values: dict[str, list[float]] = defaultdict(list)
    rows: dict[str, list[Any]] = {f.name: [] for f in DOC_SCHEMA}
    removed_lines: list[str] = []
    num_in = num_out = bytes_in = row = 0
    docs_tmp = dirs["docs"] / f"{name}.parquet.tmp"
    writer = pq.ParquetWriter(docs_tmp, DOC_SCHEMA)
    quarantine_tmp = dirs["quarantine"] / f"{name}.jsonl.tmp"
    with open(quarantine_tmp, "w", encoding="utf-8") as qf:
        for parsed in read_partition(part):
            order = (part.index << 32) | row
            row += 1
            parsed, res, text, used, raw_bytes = record_step(parsed, cfg, steps, fields)
            if parsed.error is not None:
                _quarantine(qf, parsed, parsed.error, quarantine)
                continue
            rec = parsed.record
            num_in += 1
            bytes_in += raw_bytes
            counter.add(enabled, res.steps_passed, res.removed_by, res.reason, raw_bytes, res.text_after)
            for k, v in res.stats.items():
                stat_values[k].append(float(v))
            if res.text is None:
                removed_lines.append(json.dumps({"id": rec[cfg.id_field], "order": order, "step": res.removed_by,
                                                 "reason": res.reason, "duplicate_of": None}))
                continue
            num_out += 1
            sig = steps.signature(res.text) if cfg.minhash.enabled else np.empty(0, np.uint32)
            for k, v in (("order", order), ("id", rec[cfg.id_field]), ("text", text),
                         ("record", json.dumps({k: v for k, v in rec.items() if k not in used}, ensure_ascii=False,
                                               default=str)),
                         ("exact_key", steps.exact_key(res.text)), ("sig", sig.tobytes())):
                rows[k].append(v)
            if len(rows["order"]) >= BATCH_ROWS:
                writer.write_table(pa.table(rows, schema=DOC_SCHEMA))
                rows = {f.name: [] for f in DOC_SCHEMA}
    if rows["order"]:
        writer.write_table(pa.table(rows, schema=DOC_SCHEMA))
    writer.close()
    os.replace(docs_tmp, dirs["docs"] / f"{name}.parquet")
    os.replace(quarantine_tmp, dirs["quarantine"] / f"{name}.jsonl")
    atomic_write_text(dirs["removed"] / f"{name}.jsonl", "".join(line + "\n" for line in removed_lines))
    longest = max((len(v) for v in stat_values.values()), default=0)
    table = pa.table({k: pa.array(v + [None] * (longest - len(v)), pa.float32()) for k, v in stat_values.items()})
    pq.write_table(table, dirs["filterstats"] / f"{name}.parquet")
    summary = {"partition": part.index, "docs_in": num_in, "docs_out": num_out, "bytes_in": bytes_in,
               "quarantined": dict(quarantine), "steps": counter.as_dict(), "skipped": False}
    atomic_write_text(dirs["stats"] / f"{name}.json", json.dumps(summary))
    marker.write_text("done\n")
    return summary

"""Stage 1 of data_prep for one input partition: parse, run the per-document steps, write results.

Runs inside a Ray Data task (see :mod:`orchestrator.data.pipeline`) and streams: documents are
written in batches, so memory is bounded by the batch size whatever the partition size. Outputs go
to ``<work>/stage1/`` and a completion marker is written last, so a rerun skips finished partitions.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from orchestrator.config.data_prep import DataPrepDataConfig
from orchestrator.core.files import atomic_write_text
from orchestrator.data.chat_prep import record_step
from orchestrator.data.readers import UNREADABLE, Partition, extract_fields, read_partition, unreadable_file_error
from orchestrator.data.shingle_store import SUBDIR, ShingleWriter
from orchestrator.data.steps import DocumentSteps, record_text

BATCH_ROWS = 2048
DOC_SCHEMA = pa.schema([
    ("order", pa.int64()), ("id", pa.string()), ("text", pa.string()), ("record", pa.string()),
    ("exact_key", pa.string()), ("sig", pa.binary()),
])
FORMAT_FIELDS = {"sft": ("prompt_field", "response_field"),
                 "preference": ("prompt_field", "chosen_field", "rejected_field"),
                 "prompts": ("prompt_field",)}


def part_name(index: int) -> str:
    return f"part-{index:05d}"


def text_fields(cfg: DataPrepDataConfig) -> tuple[str, ...]:
    """Input fields holding text for the configured output format."""
    if cfg.format == "pretrain":
        return (cfg.text_field,)
    return tuple(getattr(cfg, f) for f in FORMAT_FIELDS[cfg.format])


class _StepCounter:
    """Per-step documents and bytes in/out."""

    def __init__(self) -> None:
        self.docs_in: Counter[str] = Counter()
        self.docs_out: Counter[str] = Counter()
        self.bytes_in: Counter[str] = Counter()
        self.bytes_out: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()

    def add(self, enabled: list[str], passed: tuple[str, ...], removed_by: Optional[str], reason: Optional[str],
            raw_bytes: int, sizes: dict[str, int]) -> None:
        size = raw_bytes
        for step in enabled:
            if step in passed:
                self.docs_in[step] += 1
                self.docs_out[step] += 1
                self.bytes_in[step] += size
                size = sizes.get(step, size)
                self.bytes_out[step] += size
            elif step == removed_by:
                self.docs_in[step] += 1
                self.bytes_in[step] += size
                self.reasons[f"{step}/{reason or step}"] += 1
                return

    def as_dict(self) -> dict[str, Any]:
        return {k: dict(getattr(self, k)) for k in ("docs_in", "docs_out", "bytes_in", "bytes_out", "reasons")}


class _Stage1Outputs:
    """The files stage 1 writes for one partition, streamed and committed atomically (marker last)."""

    def __init__(self, part: Partition, cfg: DataPrepDataConfig, work: Path) -> None:
        self.part, self.cfg, self.name = part, cfg, part_name(part.index)
        self.dirs = {k: work / "stage1" / k for k in ("docs", "removed", "quarantine", "stats", "filterstats", "done")}
        for d in self.dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        self.steps = DocumentSteps(cfg, work / "decontam")
        self.enabled = [s for s in self.steps.enabled_steps() if s not in ("exact_dedup", "near_dedup")]
        self.fields = text_fields(cfg)
        self.counter = _StepCounter()
        self.quarantine: Counter[str] = Counter()
        self.bad_files: list[dict[str, Any]] = []
        self.stat_values: dict[str, list[float]] = defaultdict(list)
        self.rows: dict[str, list[Any]] = {f.name: [] for f in DOC_SCHEMA}
        self.removed_lines: list[str] = []
        self.num_in = self.num_out = self.bytes_in = 0
        self.writer = pq.ParquetWriter(self._tmp("docs", ".parquet"), DOC_SCHEMA)
        self.qf = open(self._tmp("quarantine", ".jsonl"), "w", encoding="utf-8")
        self.shingles = (ShingleWriter(work / "stage1" / SUBDIR, self.name)
                         if cfg.minhash.enabled and cfg.minhash.verification == "jaccard" else None)

    def _tmp(self, kind: str, ext: str) -> Path:
        return self.dirs[kind] / f"{self.name}{ext}.tmp"

    def add_error(self, parsed: Any) -> None:
        """A quarantined record, or a damaged file (counted as a file, not as a record)."""
        entry = {"source": parsed.source, "offset": parsed.offset, "reason": parsed.error, "raw": parsed.raw}
        if parsed.error == UNREADABLE:
            entry["records_read"] = parsed.records_read
            self.bad_files.append({"path": parsed.source, "error": parsed.raw, "records_read": parsed.records_read,
                                   "offset": parsed.offset})
        else:
            self.quarantine[parsed.error] += 1
        self.qf.write(json.dumps(entry, ensure_ascii=False) + "\n")

    def add_document(self, order: int, rec: dict[str, Any]) -> None:
        """A pretraining document through the per-document steps (see :meth:`add_result`)."""
        raw_bytes = len(record_text(rec, self.fields).encode())
        res = self.steps.run(rec[self.cfg.text_field])
        self.add_result(order, rec, res, res.text, set(self.fields), raw_bytes)

    def add_result(self, order: int, rec: dict[str, Any], res: Any, text_column: Optional[str], used: set[str],
                   raw_bytes: int) -> None:
        """Count a document's step results; a survivor becomes a docs row (``text_column`` as its text, the
        record's fields outside ``used`` kept beside it) and its shingle set."""
        cfg, steps = self.cfg, self.steps
        doc_id = rec[cfg.id_field]
        self.num_in += 1
        self.bytes_in += raw_bytes
        self.counter.add(self.enabled, res.steps_passed, res.removed_by, res.reason, raw_bytes, res.text_after)
        for k, v in res.stats.items():
            self.stat_values[k].append(float(v))
        if res.text is None:
            self.removed_lines.append(json.dumps({"id": doc_id, "order": order, "step": res.removed_by,
                                                  "reason": res.reason, "duplicate_of": None, **res.detail},
                                                 ensure_ascii=False))
            return
        self.num_out += 1
        sig = np.empty(0, np.uint32)
        if cfg.minhash.enabled:
            hashes = steps.shingle_hashes(res.text)
            sig = steps.signature(res.text, hashes)
            if self.shingles is not None:
                self.shingles.add(order, hashes)
        extra = {k: v for k, v in rec.items() if k not in used}
        for key, value in (("order", order), ("id", doc_id), ("exact_key", steps.exact_key(res.text)),
                           ("text", text_column),
                           ("record", json.dumps(extra, ensure_ascii=False, default=str)), ("sig", sig.tobytes())):
            self.rows[key].append(value)
        if len(self.rows["order"]) >= BATCH_ROWS:
            self.flush()

    def flush(self) -> None:
        if self.rows["order"]:
            self.writer.write_table(pa.table(self.rows, schema=DOC_SCHEMA))
            for v in self.rows.values():
                v.clear()

    def commit(self) -> dict[str, Any]:
        """Close and publish every file; the marker goes last. Returns the partition's summary."""
        self.flush()
        self.writer.close()
        self.qf.close()
        if self.shingles is not None:
            self.shingles.close()
        os.replace(self._tmp("docs", ".parquet"), self.dirs["docs"] / f"{self.name}.parquet")
        os.replace(self._tmp("quarantine", ".jsonl"), self.dirs["quarantine"] / f"{self.name}.jsonl")
        atomic_write_text(self.dirs["removed"] / f"{self.name}.jsonl", "".join(x + "\n" for x in self.removed_lines))
        longest = max((len(v) for v in self.stat_values.values()), default=0)
        table = pa.table({k: pa.array(v + [None] * (longest - len(v)), pa.float32()) for k, v in self.stat_values.items()})
        pq.write_table(table, self.dirs["filterstats"] / f"{self.name}.parquet")
        summary = {"partition": self.part.index, "docs_in": self.num_in, "docs_out": self.num_out,
                   "bytes_in": self.bytes_in, "quarantined": dict(self.quarantine), "bad_files": self.bad_files,
                   "steps": self.counter.as_dict(), "skipped": False}
        atomic_write_text(self.dirs["stats"] / f"{self.name}.json", json.dumps(summary))
        (self.dirs["done"] / self.name).write_text("done\n")
        return summary


def process_partition(part: Partition, cfg: DataPrepDataConfig, work: str | Path) -> dict[str, Any]:
    """Run stage 1 on one partition unless its completion marker exists; returns its summary."""
    work = Path(work)
    name = part_name(part.index)
    if (work / "stage1" / "done" / name).exists():
        return json.loads((work / "stage1" / "stats" / f"{name}.json").read_text()) | {"skipped": True}
    outputs = _Stage1Outputs(part, cfg, work)
    fields = text_fields(cfg)
    for row, parsed in enumerate(read_partition(part)):
        order = (part.index << 32) | row
        if cfg.format != "pretrain" and parsed.error is None:  # records: flat fields or a conversation
            parsed, res, text, used, raw_bytes = record_step(parsed, cfg, outputs.steps, fields)
            if parsed.error is None:
                outputs.add_result(order, parsed.record, res, text, used, raw_bytes)
                continue
        if parsed.error is None:
            parsed = extract_fields(parsed, cfg.id_field, fields)
        if parsed.error is not None:
            outputs.add_error(parsed)
        else:
            assert parsed.record is not None
            outputs.add_document(order, parsed.record)
    return outputs.commit()


def check_bad_files(stage1: list[dict[str, Any]], on_bad_file: str) -> list[dict[str, Any]]:
    """The damaged input files that stage 1 quarantined (logged once each); under
    ``data.on_bad_file=fail`` the first one is a :class:`ConfigError` naming it.

    Raises:
        ConfigError: ``on_bad_file='fail'`` and a file was damaged.
    """
    import logging

    bad = [b for s in stage1 for b in s.get("bad_files", [])]
    if bad and on_bad_file == "fail":
        raise unreadable_file_error(bad[0]["path"], bad[0]["error"], bad[0]["records_read"])
    for b in bad:
        logging.getLogger(__name__).warning("data_prep: quarantined damaged file %s (%s) after %d records",
                                            b["path"], b["error"], b["records_read"])
    return bad

"""Stage 3 (per partition): drop dedup removals, write kept documents and the removal manifest;
stage 4 helpers: tokenize kept partitions and pack token streams into fixed-length blocks."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from orchestrator.config.data_prep import DataPrepDataConfig
from orchestrator.data.chat_records import is_chat_record
from orchestrator.data.partition import part_name, text_fields


def _dedup_removals(root: Path, index: int) -> dict[int, str]:
    """order -> duplicate_of id of this partition's removals under ``root/part=<index>``."""
    d = root / f"part={index}"
    if not d.exists():
        return {}
    table = pads.dataset(str(d), format="parquet").to_table(columns=["order", "duplicate_of"])
    return dict(zip(table.column("order").to_pylist(), table.column("duplicate_of").to_pylist()))


def finalize_partition(index: int, cfg: DataPrepDataConfig, work: str | Path, out: str | Path) -> dict[str, Any]:
    """Write ``<out>/kept/part-K.jsonl`` and ``<out>/removals/part-K.jsonl`` (marker last)."""
    work, out = Path(work), Path(out)
    name = part_name(index)
    marker = work / "stage3" / "done" / name
    counts_path = work / "stage3" / "counts" / f"{name}.json"
    if marker.exists():
        return json.loads(counts_path.read_text()) | {"skipped": True}
    for d in (marker.parent, counts_path.parent, out / "kept", out / "removals"):
        d.mkdir(parents=True, exist_ok=True)
    exact = _dedup_removals(work / "dedup" / "exact" / "removals", index)
    near = _dedup_removals(work / "dedup" / "near" / "removals", index)
    fields = text_fields(cfg)
    counts = {"partition": index, "exact_dedup": 0, "near_dedup": 0, "kept": 0, "kept_bytes": 0,
              "exact_dedup_bytes": 0, "near_dedup_bytes": 0}
    kept_tmp = out / "kept" / f"{name}.jsonl.tmp"
    rem_tmp = out / "removals" / f"{name}.jsonl.tmp"
    with open(kept_tmp, "w", encoding="utf-8") as kf, open(rem_tmp, "w", encoding="utf-8") as rf:
        rf.write((work / "stage1" / "removed" / f"{name}.jsonl").read_text(encoding="utf-8"))
        pf = pq.ParquetFile(work / "stage1" / "docs" / f"{name}.parquet")
        for batch in pf.iter_batches(columns=["order", "id", "text", "record"], batch_size=2048):
            for order, doc_id, text, record in zip(*(batch.column(c).to_pylist() for c in ("order", "id", "text", "record"))):
                nbytes = len(text.encode())
                step = "exact_dedup" if order in exact else "near_dedup" if order in near else None
                if step is not None:
                    dup = exact.get(order) if step == "exact_dedup" else near.get(order)
                    rf.write(json.dumps({"id": doc_id, "order": order, "step": step,
                                         "reason": "exact_duplicate" if step == "exact_dedup" else "near_duplicate",
                                         "duplicate_of": dup}, ensure_ascii=False) + "\n")
                    counts[step] += 1
                    counts[f"{step}_bytes"] += nbytes
                    continue
                rec = json.loads(record)
                if cfg.format == "pretrain":
                    rec[cfg.text_field] = text
                else:
                    out_fields = json.loads(text)
                    rec.update(out_fields)
                    rec.pop(cfg.id_field, None)
                    if not is_chat_record(out_fields, cfg.format):  # chat records are canonical already
                        for src, dst in zip(fields, canonical_fields(cfg.format)):
                            rec[dst] = rec.pop(src)
                    rec = {"id": doc_id, **rec}
                kf.write(json.dumps(rec, ensure_ascii=False) + "\n")
                counts["kept"] += 1
                counts["kept_bytes"] += nbytes
    os.replace(kept_tmp, out / "kept" / f"{name}.jsonl")
    os.replace(rem_tmp, out / "removals" / f"{name}.jsonl")
    counts_path.write_text(json.dumps(counts))
    marker.write_text("done\n")
    return counts | {"skipped": False}


def canonical_fields(fmt: str) -> tuple[str, ...]:
    """Text fields of a flat records format, as ``write_records_dataset`` names them (chat records carry
    ``messages`` or message-list ``prompt``/``chosen``/``rejected`` instead)."""
    from orchestrator.data.shards import REQUIRED_FIELDS

    return REQUIRED_FIELDS[fmt]


def iter_kept(out: str | Path) -> Iterator[dict[str, Any]]:
    """Kept records of every partition, in input order."""
    for path in sorted((Path(out) / "kept").glob("part-*.jsonl")):
        with open(path, encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)


def tokenize_partition(index: int, tokenizer_json: str, eos_id: int, text_field: str, work: str | Path,
                       out: str | Path) -> dict[str, Any]:
    """Token ids of a kept partition (each document followed by EOS) as ``<work>/tokens/part-K.npy``."""
    from tokenizers import Tokenizer

    work = Path(work)
    name = part_name(index)
    path = work / "tokens" / f"{name}.npy"
    marker = work / "tokens" / "done" / name
    if marker.exists():
        return {"partition": index, "tokens": int(np.load(path, mmap_mode="r").shape[0]), "skipped": True}
    marker.parent.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer.from_file(tokenizer_json)
    texts = []
    with open(Path(out) / "kept" / f"{name}.jsonl", encoding="utf-8") as f:
        texts = [json.loads(line)[text_field] for line in f]
    chunks = [np.asarray(e.ids + [eos_id], dtype=np.uint32) for e in tok.encode_batch(texts)] if texts else []
    ids = np.concatenate(chunks) if chunks else np.empty(0, np.uint32)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, ids)
    os.replace(tmp, path)
    marker.write_text("done\n")
    return {"partition": index, "tokens": int(ids.shape[0]), "skipped": False}


def pack_arrays(streams: Iterable[np.ndarray], seq_len: int) -> Iterator[np.ndarray]:
    """Concatenate token streams and cut them into [n, seq_len] blocks; the final partial block is
    dropped (no padding). Memory: one stream plus one block."""
    carry = np.empty(0, dtype=np.int64)
    for ids in streams:
        buf = np.concatenate([carry, np.asarray(ids, dtype=np.int64)])
        n = len(buf) // seq_len
        if n:
            yield buf[: n * seq_len].reshape(n, seq_len)
        carry = buf[n * seq_len:]

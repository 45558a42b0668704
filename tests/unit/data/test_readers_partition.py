"""Readers (JSONL/.gz/.zst/Parquet/HF dir), byte-range partitions, quarantine, empty input, and the
stage-1/stage-3 partition tasks run in-process (markers make reruns skip)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from orchestrator.config import ConfigError
from orchestrator.config.data_prep import DataPrepDataConfig
from orchestrator.data.corpus import Vocabulary, write_jsonl
from orchestrator.data.finalize import finalize_partition, pack_arrays
from orchestrator.data.inputs import resolve_partitions
from orchestrator.data.partition import process_partition
from orchestrator.data.readers import plan_partitions, read_partition

import random

import numpy as np

BAD_LINES = [b'{"id": "x", "text": "unterminated', b"\xff\xfe not utf-8", b'{"id": "y", "body": "no text"}',
             b'{"id": "z", "text": ""}', b"[1, 2]", b'{"id": 5, "text": 7}']
REASONS = {"bad_json": 1, "non_utf8": 1, "missing_text": 3, "not_an_object": 1}


def records(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    v = Vocabulary()
    return [{"id": f"r{i}", "text": v.document(rng), "meta": i} for i in range(n)]


def all_records(parts) -> list:
    return [p for part in parts for p in read_partition(part)]


def test_byte_range_partitions_cover_every_line_once(tmp_path):
    recs = records(200)
    path = tmp_path / "in.jsonl"
    write_jsonl(path, recs)
    parts = plan_partitions(str(path), "auto", 4096)
    assert len(parts) > 10 and all(p.kind == "jsonl" for p in parts)
    got = [p.record["id"] for p in all_records(parts)]
    assert got == [r["id"] for r in recs]


def test_compressed_parquet_and_hf_inputs(tmp_path):
    recs = records(30)
    payload = b"".join(json.dumps(r).encode() + b"\n" for r in recs)
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(payload))
    (tmp_path / "b.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(payload))
    table = pa.Table.from_pylist(recs)
    pq.write_table(table, tmp_path / "c.parquet", row_group_size=10)
    for name in ("a.jsonl.gz", "b.jsonl.zst", "c.parquet"):
        parts = plan_partitions(str(tmp_path / name), "auto", 1 << 20)
        assert [p.record["id"] for p in all_records(parts)] == [r["id"] for r in recs]
    assert len(plan_partitions(str(tmp_path / "c.parquet"), "auto", 1 << 20)) == 3  # row groups
    import datasets

    datasets.Dataset.from_list(recs).save_to_disk(str(tmp_path / "hf"))
    parts = plan_partitions(str(tmp_path / "hf"), "auto", 1 << 20)
    assert parts and all(p.kind == "arrow" for p in parts)
    assert [p.record["id"] for p in all_records(parts)] == [r["id"] for r in recs]
    # a glob over several kinds
    assert len(all_records(plan_partitions(str(tmp_path / "*.jsonl.*"), "auto", 1 << 20))) == 60


def test_empty_and_unreadable_input_refused(tmp_path):
    (tmp_path / "empty.jsonl").write_bytes(b"")
    cfg = DataPrepDataConfig(input=str(tmp_path / "empty.jsonl"))
    with pytest.raises(ConfigError, match="data.input.*empty"):
        resolve_partitions(tmp_path / "out", cfg)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ConfigError, match="no readable input"):
        resolve_partitions(tmp_path / "out", DataPrepDataConfig(input=str(tmp_path / "notes.txt")))


def _write_input(tmp_path: Path) -> Path:
    recs = records(40)
    recs += [dict(recs[3], id="copy-3"), {"text": recs[5]["text"] + " Mail me: joe@example.com."}]
    lines = [json.dumps(r).encode() for r in recs]
    for i, bad in enumerate(BAD_LINES):
        lines.insert(7 * i + 1, bad)
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_partition_quarantines_and_counts(tmp_path):
    path = _write_input(tmp_path)
    cfg = DataPrepDataConfig(input=str(path))
    _, parts = resolve_partitions(tmp_path, cfg)
    s = process_partition(parts[0], cfg, tmp_path / "work")
    assert s["quarantined"] == REASONS
    assert s["docs_in"] == 42 and s["docs_out"] == 42  # generated docs pass every filter
    assert s["steps"]["docs_in"]["normalize"] == 42 and s["steps"]["docs_out"]["pii"] == 42
    assert s["steps"]["bytes_out"]["pii"] < s["steps"]["bytes_in"]["pii"]  # the e-mail became <EMAIL>
    q = [json.loads(x) for x in (tmp_path / "work/stage1/quarantine/part-00000.jsonl").read_text().splitlines()]
    assert sorted(x["reason"] for x in q) == sorted(r for r, n in REASONS.items() for _ in range(n))
    assert all(x["source"] == str(path) and isinstance(x["offset"], int) for x in q)
    # rerun: the marker makes it skip
    again = process_partition(parts[0], cfg, tmp_path / "work")
    assert again["skipped"] and again["docs_in"] == 42
    # stage 3 without dedup removals keeps everything; ids preserved or generated stably
    c = finalize_partition(0, cfg, tmp_path / "work", tmp_path)
    kept = [json.loads(x) for x in (tmp_path / "kept/part-00000.jsonl").read_text().splitlines()]
    assert c["kept"] == 42 == len(kept)
    assert kept[0]["id"] == "r0" and kept[0]["meta"] == 0 and set(kept[0]) == {"id", "text", "meta"}
    generated = [k for k in kept if k["id"].startswith("doc-")]
    assert len(generated) == 1 and "<EMAIL>" in generated[0]["text"]
    tmp2 = tmp_path / "again"
    tmp2.mkdir()
    process_partition(parts[0], cfg, tmp2 / "work")
    finalize_partition(0, cfg, tmp2 / "work", tmp2)
    assert (tmp2 / "kept/part-00000.jsonl").read_text() == (tmp_path / "kept/part-00000.jsonl").read_text()


def test_removed_documents_in_manifest(tmp_path):
    rng = random.Random(1)
    v = Vocabulary()
    recs = [{"id": "good", "text": v.document(rng)}, {"id": "lorem", "text": "Lorem ipsum " + v.document(rng)},
            {"id": "short", "text": "Too short."}]
    path = tmp_path / "in.jsonl"
    write_jsonl(path, recs)
    cfg = DataPrepDataConfig(input=str(path))
    _, parts = resolve_partitions(tmp_path, cfg)
    process_partition(parts[0], cfg, tmp_path / "work")
    finalize_partition(0, cfg, tmp_path / "work", tmp_path)
    rem = {r["id"]: r for r in map(json.loads, (tmp_path / "removals/part-00000.jsonl").read_text().splitlines())}
    assert rem["lorem"]["step"] == "c4" and rem["lorem"]["reason"] == "c4_lorem_ipsum"
    assert rem["short"]["step"] == "gopher_quality" and rem["short"]["duplicate_of"] is None
    assert "good" not in rem


def test_pack_arrays_carries_remainder():
    blocks = list(pack_arrays([np.arange(5), np.arange(5, 12), np.arange(12, 13)], 4))
    assert np.concatenate(blocks).ravel().tolist() == list(range(12))
    assert all(b.shape[1] == 4 for b in blocks)


def test_clean_documents_in_process():
    from orchestrator.data.clean import clean_documents

    rng = random.Random(5)
    v = Vocabulary()
    a, b = v.document(rng), v.document(rng)
    out = clean_documents([a, "Too short.", a.upper(), b + " Mail x@y.org now.", "Lorem ipsum " + a])
    assert len(out) == 2 and out[0].split() == a.split()  # C4 drops the blank lines between paragraphs
    assert out[1].split() == (b + " Mail <EMAIL> now.").split()

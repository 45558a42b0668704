"""Damaged input files (issue #19): a truncated .jsonl.gz / .jsonl.zst, a corrupt .parquet and a corrupt
HF .arrow shard beside good files. The records read before the damage are kept, the file is recorded in
the quarantine with its path, error and how far it was read, stats count it, the other files are
processed; under ``data.on_bad_file=fail`` the run stops with one ConfigError naming the file."""

from __future__ import annotations

import gzip
import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from orchestrator.config import ConfigError
from orchestrator.config.data_prep import DataPrepDataConfig
from orchestrator.data.corpus import Vocabulary
from orchestrator.data.inputs import resolve_partitions
from orchestrator.data.partition import check_bad_files, process_partition
from orchestrator.data.readers import UNREADABLE, plan_partitions, read_partition
from orchestrator.data.stats import aggregate_step_stats


def records(prefix: str, n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    v = Vocabulary()
    return [{"id": f"{prefix}{i}", "text": v.document(rng)} for i in range(n)]


def jsonl(recs: list[dict]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in recs)


def write_damaged_inputs(d):
    """good.jsonl (20), good.parquet (20), half a .jsonl.gz (of 200), 3/4 of a .jsonl.zst (of 200), random
    bytes named .parquet; returns the ids of the good files."""
    good = records("g", 20, 0)
    (d / "a-good.jsonl").write_bytes(jsonl(good))
    pq_recs = records("p", 20, 1)
    pq.write_table(pa.Table.from_pylist(pq_recs), d / "b-good.parquet")
    gz = gzip.compress(jsonl(records("z", 200, 2)))
    (d / "c-cut.jsonl.gz").write_bytes(gz[: len(gz) // 2])
    zst = zstandard.ZstdCompressor().compress(jsonl(records("s", 200, 3)))
    (d / "d-cut.jsonl.zst").write_bytes(zst[: len(zst) * 3 // 4])  # zstd decodes whole 128 KiB blocks
    (d / "e-random.parquet").write_bytes(random.Random(4).randbytes(5000))
    return [r["id"] for r in good + pq_recs]


@pytest.mark.parametrize("name,compress", [("x.jsonl.gz", gzip.compress),
                                           ("x.jsonl.zst", zstandard.ZstdCompressor().compress)])
def test_truncated_stream_keeps_records_before_the_damage(tmp_path, name, compress):
    recs = records("r", 200, 5)
    data = compress(jsonl(recs))
    (tmp_path / name).write_bytes(data[: len(data) // 2])
    (part,) = plan_partitions(str(tmp_path / name), "auto", 1 << 20)
    got = list(read_partition(part))
    *ok, last = got
    assert last.error == UNREADABLE and last.records_read == len(ok) and last.source == str(tmp_path / name)
    assert ("EOFError" in last.raw or "Zstd" in last.raw or "zstd" in last.raw), last.raw
    good = [p.record["id"] for p in ok if p.error is None]
    # about half the records survive, exactly the first ones, in order (a torn last line is quarantined)
    assert 60 <= len(good) < 200 and good == [r["id"] for r in recs[: len(good)]]
    assert all(p.error in (None, "bad_json") for p in ok)


def test_corrupt_parquet_and_arrow_are_one_quarantined_partition(tmp_path):
    (tmp_path / "bad.parquet").write_bytes(b"PAR1" + bytes(range(256)) * 8)
    (part,) = plan_partitions(str(tmp_path / "bad.parquet"), "auto", 1 << 20)
    (entry,) = read_partition(part)
    assert entry.error == UNREADABLE and entry.records_read == 0 and "Parquet" in entry.raw
    import datasets

    datasets.Dataset.from_list(records("h", 10, 6)).save_to_disk(str(tmp_path / "hf"))
    shard = next((tmp_path / "hf").glob("*.arrow"))
    shard.write_bytes(shard.read_bytes()[:200])
    (part,) = plan_partitions(str(tmp_path / "hf"), "auto", 1 << 20)
    assert [p.error for p in read_partition(part)] == [UNREADABLE]


def test_damaged_files_quarantined_counted_and_rest_processed(tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    good_ids = write_damaged_inputs(inp)
    cfg = DataPrepDataConfig(input=str(inp))
    _, parts = resolve_partitions(tmp_path, cfg)
    assert len(parts) == 5  # the corrupt .parquet is planned as one partition, not an exception
    s1 = [process_partition(p, cfg, tmp_path / "work") for p in parts]
    bad = check_bad_files(s1, "quarantine")
    assert sorted(b["path"].rsplit("/", 1)[1] for b in bad) == ["c-cut.jsonl.gz", "d-cut.jsonl.zst", "e-random.parquet"]
    by_name = {b["path"].rsplit("/", 1)[1]: b for b in bad}
    assert by_name["e-random.parquet"]["records_read"] == 0 and by_name["c-cut.jsonl.gz"]["records_read"] > 50
    assert by_name["d-cut.jsonl.zst"]["records_read"] > 50
    stats = aggregate_step_stats(["normalize"], s1, [])
    assert stats["bad_files"] == 3 and stats["quarantined"] <= 2  # at most a torn last line per stream
    assert stats["docs_in"] == 40 + by_name["c-cut.jsonl.gz"]["records_read"] + by_name["d-cut.jsonl.zst"]["records_read"] \
        - stats["quarantined"]
    q = [json.loads(x) for f in sorted((tmp_path / "work/stage1/quarantine").glob("*.jsonl"))
         for x in f.read_text().splitlines()]
    files = [x for x in q if x["reason"] == UNREADABLE]
    assert len(files) == 3 and all(x["raw"] and isinstance(x["records_read"], int) for x in files)
    docs = pq.read_table(tmp_path / "work/stage1/docs/part-00000.parquet").column("id").to_pylist()
    docs += pq.read_table(tmp_path / "work/stage1/docs/part-00001.parquet").column("id").to_pylist()
    assert docs == good_ids
    with pytest.raises(ConfigError, match=r"data.input: .*c-cut.jsonl.gz is damaged.*EOFError.*on_bad_file=quarantine"):
        check_bad_files(s1, "fail")


def test_fail_refuses_a_corrupt_parquet_footer_before_ray(tmp_path):
    write_damaged_inputs(tmp_path)
    with pytest.raises(ConfigError, match=r"e-random.parquet is damaged.*0 records read"):
        resolve_partitions(tmp_path, DataPrepDataConfig(input=str(tmp_path), on_bad_file="fail"))
    with pytest.raises(ConfigError, match="data.on_bad_file"):
        DataPrepDataConfig(on_bad_file="skip")

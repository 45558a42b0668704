"""The file-backed shuffle's task functions (scatter one file, gather one bucket) on local files, and
the group functions of the dedup shuffles; Ray is exercised by the integration tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from orchestrator.data import dedup, shuffle


def _write(path: Path, **cols) -> str:
    pq.write_table(pa.table(cols), path)
    return str(path)


def key_mod(batch, num_buckets):
    return {**batch, "bucket": np.asarray(batch["k"], np.int64) % num_buckets}


def sum_by_key(batch):
    k = np.asarray(batch["k"], np.int64)
    keys, inv = np.unique(k, return_inverse=True)
    return {"k": keys, "total": np.bincount(inv, weights=np.asarray(batch["v"], np.int64)).astype(np.int64),
            "part": keys % 2}, {"groups": len(keys)}


def _scatter_all(files, dst, n):
    for i, f in enumerate(files):
        shuffle._scatter_file(f, f"in-{i}", str(dst), str(dst.parent / "_markers" / dst.name), None, key_mod,
                              {"num_buckets": n})


def test_scatter_then_gather_equals_an_in_memory_group_by(tmp_path, monkeypatch):
    monkeypatch.setattr(shuffle, "SCATTER_BATCH_ROWS", 7)  # several row batches per file
    rng = np.random.default_rng(0)
    ks, vs = rng.integers(0, 50, 200), rng.integers(0, 1000, 200)
    files = [_write(tmp_path / f"f{i}.parquet", k=ks[i::3], v=vs[i::3]) for i in range(3)]
    _scatter_all(files, tmp_path / "s", 4)
    # every bucket directory holds only its keys
    for d in (tmp_path / "s").glob("b=*"):
        j = int(d.name[2:])
        keys = pa.concat_tables([pq.read_table(f) for f in d.glob("*.parquet")]).column("k").to_numpy()
        assert len(keys) and set(keys % 4) == {j}
    stats = [shuffle._gather_bucket(j, str(tmp_path / "s"), str(tmp_path / "out"), sum_by_key, {}, "part")
             for j in range(4)]
    assert sum(s["rows_in"] for s in stats) == 200 and sum(s["groups"] for s in stats) == len(set(ks.tolist()))
    got = {}
    for p in (0, 1):
        t = pa.concat_tables([pq.read_table(f) for f in (tmp_path / "out" / f"part={p}").glob("*.parquet")])
        assert "part" not in t.column_names and all(k % 2 == p for k in t.column("k").to_pylist())
        got.update(zip(t.column("k").to_pylist(), t.column("total").to_pylist()))
    expected = {int(k): int(vs[ks == k].sum()) for k in set(ks.tolist())}
    assert got == expected


def test_finished_tasks_are_skipped_and_an_unfinished_one_redone(tmp_path):
    f = _write(tmp_path / "f.parquet", k=np.arange(40), v=np.ones(40, np.int64))
    _scatter_all([f], tmp_path / "s", 2)
    args = (str(tmp_path / "s"), str(tmp_path / "out"), sum_by_key, {}, None)
    first = [shuffle._gather_bucket(j, *args) for j in range(2)]
    out0, out1 = tmp_path / "out" / "b-00000.parquet", tmp_path / "out" / "b-00001.parquet"
    stamp1 = out1.stat().st_mtime_ns
    # bucket 0 was interrupted: output written, marker lost; bucket 1 finished
    (tmp_path / "out" / "_markers" / "gather-00000").unlink()
    out0.unlink()
    again = [shuffle._gather_bucket(j, *args) for j in range(2)]
    assert again == first and out0.exists() and out1.stat().st_mtime_ns == stamp1
    # a finished scatter is not redone either (its marker holds the row count)
    marker = tmp_path / "s" / ".." / "_markers" / "s" / "scatter-in-0"
    assert json.loads(marker.read_text()) == {"rows": 40}


def test_empty_bucket_writes_nothing(tmp_path):
    f = _write(tmp_path / "f.parquet", k=np.array([0, 2, 4]), v=np.ones(3, np.int64))
    _scatter_all([f], tmp_path / "s", 2)
    assert shuffle._gather_bucket(1, str(tmp_path / "s"), str(tmp_path / "out"), sum_by_key, {}, None) == \
        {"rows_in": 0, "rows_out": 0}
    assert shuffle.output_files(tmp_path / "out") == []


def test_bucket_count_grows_with_the_data_not_the_bucket():
    assert shuffle.num_buckets_for(1000, 500, 32) == 1
    n10 = shuffle.num_buckets_for(45_000 * 14, 496, 32)
    assert n10 == 10 and 45_000 * 14 * 496 / n10 <= 32 << 20
    assert shuffle.num_buckets_for(45_000 * 14, 496, 32, fixed=3) == 3


def test_root_ids_join_across_member_and_endpoint_rows():
    stars = {"a": np.array([5, 5, (1 << 32) + 1]), "b": np.array([9, (1 << 32) + 3, (1 << 32) + 7])}
    edges = {"a": np.array([5, 5, (1 << 32) + 1]), "b": np.array([9, (1 << 32) + 3, (1 << 32) + 7]),
             "id_a": np.array(["d5", "d5", "e1"], dtype=object), "id_b": np.array(["d9", "e3", "e7"], dtype=object)}
    rows = [dedup.member_rows(stars, 1), dedup.endpoint_rows(edges, 1)]
    batch = {k: np.concatenate([r[k] for r in rows]) for k in ("key", "leaf", "id")}
    out, _ = dedup.resolve_root_ids(batch)
    got = sorted(zip(out["part"].tolist(), out["order"].tolist(), out["duplicate_of"].tolist()))
    assert got == [(0, 9, "d5"), (1, (1 << 32) + 3, "d5"), (1, (1 << 32) + 7, "e1")]

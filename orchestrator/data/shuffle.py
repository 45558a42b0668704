"""A file-backed hash shuffle on Ray Data: the group-by of the dedup stage, with memory bounded per task.

Ray Data's own ``groupby`` keeps every shuffle block in the object store (and its driver grows with
the number of blocks), so the memory of a dedup run grew with the corpus. Here a group-by is two
Ray Data maps over *files*, as datatrove and MapReduce do it:

* **scatter** (one task per input file): read the file in row batches, let a pure ``key_fn`` add a
  ``bucket`` column, and append each batch's rows to one Parquet file per bucket,
  ``<dst>/b=<j>/<name>.parquet``. Memory: one row batch.
* **gather** (one task per bucket): read bucket ``j``'s files, run a pure ``group_fn`` on all its rows,
  write the result (optionally split by a ``part`` column, for stage 3). Memory: one bucket, which
  :func:`num_buckets_for` sizes from the expected bytes (more data = more buckets, not bigger ones).

Only small statistics travel through Ray's object store; with at most one task per CPU in flight,
peak memory depends on the batch and bucket sizes, not on the corpus size. Every task writes its
outputs atomically and then a marker holding its statistics, so a rerun after an interruption skips
finished tasks. On a multi-node cluster the directories must be on storage every node mounts (as
the workspace already must be).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from orchestrator.core.files import atomic_write_text

Columns = dict[str, np.ndarray]
KeyFn = Callable[..., Columns]
GroupFn = Callable[..., tuple[Columns, dict[str, int]]]
SCATTER_BATCH_ROWS = 1024


def map_tasks(fn: Callable[..., dict[str, Any]], items: list[dict[str, Any]], **kwargs: Any) -> list[dict[str, Any]]:
    """Run ``fn(**item, **kwargs)`` for each item as a Ray Data map, one block (task) per item.

    Items and results must be JSON-serialisable (they are small: paths and counts); results come
    back in the items' order.
    """
    import ray.data

    if not items:
        return []

    def call(row: dict[str, Any]) -> dict[str, Any]:
        return {"result": json.dumps(fn(**json.loads(row["args"]), **kwargs))}

    ds = ray.data.from_items([{"args": json.dumps(i)} for i in items], override_num_blocks=len(items))
    return [json.loads(r["result"]) for r in ds.map(call).take_all()]


def num_buckets_for(num_rows: int, row_bytes: int, bucket_mb: int, fixed: Optional[int] = None) -> int:
    """Buckets so that one holds about ``bucket_mb`` MiB of rows (``fixed`` wins when set)."""
    if fixed:
        return fixed
    return max(1, -(-num_rows * row_bytes // (bucket_mb << 20)))


def _once(marker: Path, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``work`` unless ``marker`` holds its statistics from an earlier run; marker written last."""
    if marker.exists():
        return json.loads(marker.read_text())
    stats = work()
    marker.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(marker, json.dumps(stats))
    return stats


def _write_atomic(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def to_columns(table: pa.Table | pa.RecordBatch) -> Columns:
    """Arrow columns as numpy arrays (strings and binaries become object arrays)."""
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.schema.names}


def _table(columns: Columns) -> pa.Table:
    return pa.table({k: pa.array(v) for k, v in columns.items()})


def _split_by(values: np.ndarray) -> Iterable[tuple[int, np.ndarray]]:
    """(value, row indices) for each distinct value, rows in their original order."""
    values = np.asarray(values, np.int64)
    if not len(values):
        return
    idx = np.argsort(values, kind="stable")
    sorted_values = values[idx]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    for s, e in zip(starts, ends):
        yield int(sorted_values[s]), idx[s:e]


def _scatter_file(src: str, name: str, dst: str, markers: str, columns: Optional[list[str]], key_fn: KeyFn,
                  key_kwargs: dict[str, Any]) -> dict[str, Any]:
    def work() -> dict[str, Any]:
        writers: dict[int, pq.ParquetWriter] = {}
        paths: dict[int, Path] = {}
        rows = 0
        try:
            for rb in pq.ParquetFile(src).iter_batches(columns=columns, batch_size=SCATTER_BATCH_ROWS):
                out = key_fn(to_columns(rb), **key_kwargs)
                buckets = out.pop("bucket")
                table = _table(out)
                rows += table.num_rows
                for j, idx in _split_by(buckets):
                    if j not in writers:
                        paths[j] = Path(dst) / f"b={j}" / f"{name}.parquet"
                        paths[j].parent.mkdir(parents=True, exist_ok=True)
                        writers[j] = pq.ParquetWriter(str(paths[j]) + ".tmp", table.schema)
                    writers[j].write_table(table.take(pa.array(idx)))
        finally:
            for w in writers.values():
                w.close()
        for p in paths.values():
            os.replace(str(p) + ".tmp", p)
        return {"rows": rows}

    return _once(Path(markers) / f"scatter-{name}", work)


def scatter(sources: list[str], dst: Path, key_fn: KeyFn, tag: str, columns: Optional[list[str]] = None,
            **key_kwargs: Any) -> int:
    """Hash-partition the rows of Parquet ``sources`` into ``dst/b=<j>/`` by ``key_fn``'s ``bucket``
    column (one Ray Data task per file); returns the number of rows written."""
    items = [{"src": s, "name": f"{tag}-{i:05d}"} for i, s in enumerate(sources)]
    # markers live beside ``dst``: the scattered files are deleted once gathered, the markers are not
    stats = map_tasks(_scatter_file, items, dst=str(dst), markers=str(dst.parent / "_markers" / dst.name), columns=columns,
                      key_fn=key_fn, key_kwargs=key_kwargs)
    return sum(s["rows"] for s in stats)


def _gather_bucket(bucket: int, src: str, dst: str, group_fn: GroupFn, group_kwargs: dict[str, Any],
                   split_column: Optional[str]) -> dict[str, Any]:
    def work() -> dict[str, Any]:
        files = sorted((Path(src) / f"b={bucket}").glob("*.parquet"))
        if not files:
            return {"rows_in": 0, "rows_out": 0}
        table = pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")
        rows_in = table.num_rows
        out, stats = group_fn(to_columns(table), **group_kwargs)
        del table
        result = _table(out)
        if result.num_rows:
            if split_column is None:
                _write_atomic(result, Path(dst) / f"b-{bucket:05d}.parquet")
            else:
                for value, idx in _split_by(out[split_column]):
                    _write_atomic(result.take(pa.array(idx)).drop_columns([split_column]),
                                  Path(dst) / f"{split_column}={value}" / f"b-{bucket:05d}.parquet")
        return {"rows_in": rows_in, "rows_out": result.num_rows, **stats}

    return _once(Path(dst) / "_markers" / f"gather-{bucket:05d}", work)


def gather(src: Path, dst: Path, num_buckets: int, group_fn: GroupFn, split_column: Optional[str] = None,
           **group_kwargs: Any) -> dict[str, int]:
    """Run ``group_fn`` on every bucket of ``src`` (one Ray Data task per bucket), writing its rows to
    ``dst/b-<j>.parquet`` or ``dst/<split_column>=<v>/b-<j>.parquet``; returns the summed statistics
    (``rows_in``, ``rows_out`` and whatever the group function counts)."""
    stats = map_tasks(_gather_bucket, [{"bucket": j} for j in range(num_buckets)], src=str(src), dst=str(dst),
                      group_fn=group_fn, group_kwargs=group_kwargs, split_column=split_column)
    total: dict[str, int] = {}
    for s in stats:
        for k, v in s.items():
            total[k] = total.get(k, 0) + int(v)
    return total


def output_files(directory: Path) -> list[str]:
    """The gathered Parquet files of a directory (markers and temporaries excluded)."""
    return sorted(str(p) for p in directory.glob("b-*.parquet"))


def remove(*directories: Path) -> None:
    """Delete gathered scatter outputs (their markers stay, so a rerun does not scatter again)."""
    for d in directories:
        shutil.rmtree(d, ignore_errors=True)

"""Exact and MinHash near-duplicate removal as Ray Data shuffles (stage 2 of data_prep).

Nothing here pulls documents or signatures into one process: every step is a Ray Data
``groupby(...).map_groups`` over hash partitions (``bucket`` column), whose group functions are the
vectorised pure functions of :mod:`orchestrator.data.minhash` and :mod:`orchestrator.data.components`.

1. exact: group rows by hash(exact_key); every row whose key appeared at a smaller order is removed.
2. near: explode each document into one row per LSH band (band key, order, signature); group by
   hash(band key); within each bucket verify candidates on the signatures (estimated Jaccard >=
   threshold) -> edges between documents.
3. connected components of the edge graph by alternating large-star / small-star group-bys until no
   node changes (Kiveris et al. 2014); each member is removed as a duplicate of its component's
   smallest order (its first occurrence in the input).
4. the root's id is attached with one more group-by (a join by order against the edge endpoints).

Removals are written as Parquet partitioned by input partition (``part=K``), so stage 3 reads only
its own.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.data.components import large_star, small_star

log = logging.getLogger(__name__)
GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def bucket_of(values: np.ndarray, num_buckets: int) -> np.ndarray:
    """Well-mixed hash partition of integer keys."""
    with np.errstate(over="ignore"):
        mixed = (np.asarray(values).astype(np.uint64) * GOLDEN) >> np.uint64(29)
    return (mixed % np.uint64(num_buckets)).astype(np.int64)


def _part_of(orders: np.ndarray) -> np.ndarray:
    return (np.asarray(orders, np.int64) >> 32).astype(np.int64)


def _sigs(column: np.ndarray) -> np.ndarray:
    return np.frombuffer(b"".join(column), dtype=np.uint32).reshape(len(column), -1)


# ----- group / map functions (run inside Ray Data tasks) -----------------------------------------

def exact_buckets(batch: dict[str, np.ndarray], num_buckets: int) -> dict[str, np.ndarray]:
    keys = np.array([int(k[:16], 16) for k in batch["exact_key"]], dtype=np.uint64)
    return {**batch, "bucket": bucket_of(keys, num_buckets)}


def exact_group(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    from orchestrator.data.minhash import first_occurrences

    orders = np.asarray(batch["order"], np.int64)
    removed, reps = first_occurrences(np.asarray(batch["exact_key"], dtype=str), orders)
    id_of = dict(zip(orders.tolist(), batch["id"]))
    return {"part": _part_of(removed), "order": removed,
            "duplicate_of": np.array([id_of[r] for r in reps.tolist()], dtype=object)}


def explode_bands(batch: dict[str, np.ndarray], num_bands: int, rows_per_band: int,
                  num_buckets: int) -> dict[str, np.ndarray]:
    from orchestrator.data.minhash import band_keys

    sigs = _sigs(batch["sig"])
    keys = np.stack([band_keys(s, num_bands, rows_per_band) for s in sigs]) if len(sigs) else np.empty((0, num_bands), np.uint64)
    n = len(sigs)
    flat = keys.reshape(-1)
    return {"band_key": flat, "order": np.repeat(np.asarray(batch["order"], np.int64), num_bands),
            "id": np.repeat(np.asarray(batch["id"], dtype=object), num_bands),
            "sig": np.repeat(np.asarray(batch["sig"], dtype=object), num_bands),
            "bucket": bucket_of(flat, num_buckets) if n else np.empty(0, np.int64)}


def verify_group(batch: dict[str, np.ndarray], threshold: float, max_comparisons: int) -> dict[str, np.ndarray]:
    from orchestrator.data.minhash import verify_buckets

    orders = np.asarray(batch["order"], np.int64)
    a, b = verify_buckets(np.asarray(batch["band_key"], np.uint64), orders, _sigs(batch["sig"]),
                          threshold, max_comparisons)
    id_of = dict(zip(orders.tolist(), batch["id"]))
    return {"a": a, "b": b, "id_a": np.array([id_of[x] for x in a.tolist()], dtype=object),
            "id_b": np.array([id_of[x] for x in b.tolist()], dtype=object)}


def both_ways(batch: dict[str, np.ndarray], num_buckets: int) -> dict[str, np.ndarray]:
    src = np.r_[batch["a"], batch["b"]].astype(np.int64)
    dst = np.r_[batch["b"], batch["a"]].astype(np.int64)
    return {"src": src, "dst": dst, "bucket": bucket_of(src, num_buckets)}


def larger_end(batch: dict[str, np.ndarray], num_buckets: int) -> dict[str, np.ndarray]:
    src = np.asarray(batch["b"], np.int64)
    return {"src": src, "dst": np.asarray(batch["a"], np.int64), "bucket": bucket_of(src, num_buckets)}


def large_star_group(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    a, b, unstable = large_star(batch["src"], batch["dst"])
    # one sentinel row carries the group's unstable count (a group may emit no edge at all)
    return {"a": np.r_[a, -1], "b": np.r_[b, -1], "unstable": np.r_[np.zeros(len(a), np.int64), unstable]}


def _drop_sentinels(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    keep = np.asarray(batch["a"]) >= 0
    return {"a": np.asarray(batch["a"])[keep], "b": np.asarray(batch["b"])[keep]}


def small_star_group(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    a, b = small_star(batch["src"], batch["dst"])
    return {"a": a, "b": b}


def join_rows(batch: dict[str, np.ndarray], num_buckets: int) -> dict[str, np.ndarray]:
    """Rows of the root-id join: component rows keyed by root (leaf >= 0) or endpoint-id rows keyed
    by their order (leaf = -1)."""
    key = np.asarray(batch["key"], np.int64)
    return {**batch, "bucket": bucket_of(key, num_buckets)}


def resolve_root_ids(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    key = np.asarray(batch["key"], np.int64)
    leaf = np.asarray(batch["leaf"], np.int64)
    is_id = leaf < 0
    id_of = dict(zip(key[is_id].tolist(), np.asarray(batch["id"], dtype=object)[is_id]))
    roots, leaves = key[~is_id], leaf[~is_id]
    return {"part": _part_of(leaves), "order": leaves,
            "duplicate_of": np.array([id_of[r] for r in roots.tolist()], dtype=object)}


# ----- drivers ---------------------------------------------------------------------------------

def _read_columns(batch: dict[str, np.ndarray], columns: list[str]) -> dict[str, np.ndarray]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.concat_tables([pq.read_table(str(p), columns=columns) for p in batch["path"]])
    return {c: table.column(c).to_numpy(zero_copy_only=False) for c in columns}


def read_docs(doc_files: list[str], columns: list[str]) -> Any:
    """Stage-1 outputs as a Ray Data dataset, one task per file. (``ray.data.read_parquet`` starts a
    metadata-reading worker process per file fragment, ~100 MB each: memory that grows with the
    number of files rather than with the work.)"""
    import ray.data

    ds = ray.data.from_items([{"path": f} for f in doc_files], override_num_blocks=max(1, len(doc_files)))
    return ds.map_batches(_read_columns, batch_size=1, batch_format="numpy", fn_kwargs={"columns": columns})


@contextlib.contextmanager
def sort_shuffle():
    """Group-bys with Ray Data's sort-based shuffle. Ray 2.60's default hash shuffle fails on a reduce
    partition whose first block arrived empty and schema-less ("Invalid sort key column"), which
    happens with small or skewed bucket sets (e.g. late connected-components rounds)."""
    from ray.data.context import DataContext, ShuffleStrategy

    ctx = DataContext.get_current()
    previous = ctx.shuffle_strategy
    ctx.shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    try:
        yield
    finally:
        ctx.shuffle_strategy = previous


@sort_shuffle()
def run_exact_dedup(doc_files: list[str], out_dir: Path, num_buckets: int) -> int:
    """Write exact-duplicate removals (part, order, duplicate_of) under ``out_dir``; returns the count."""

    ds = read_docs(doc_files, ["order", "id", "exact_key"])
    ds = ds.map_batches(exact_buckets, fn_kwargs={"num_buckets": num_buckets}, batch_format="numpy")
    removed = ds.groupby("bucket", num_partitions=num_buckets).map_groups(exact_group, batch_format="numpy")
    removed = removed.materialize()
    count = removed.count()
    if count:
        removed.write_parquet(str(out_dir), partition_cols=["part"])
    return count


@sort_shuffle()
def connected_components(edges: Any, num_buckets: int, max_iterations: int) -> tuple[Any, int]:
    """Star-form edges (a = component root, b = member) of an edge dataset with columns a, b."""
    from ray.data.context import ShuffleStrategy

    edges.context.shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED  # datasets made by the caller
    rounds = 0
    for rounds in range(1, max_iterations + 1):
        stars = (edges.map_batches(both_ways, fn_kwargs={"num_buckets": num_buckets}, batch_format="numpy")
                 .groupby("bucket", num_partitions=num_buckets)
                 .map_groups(large_star_group, batch_format="numpy")).materialize()
        unstable = stars.sum("unstable") or 0
        stars = stars.map_batches(_drop_sentinels, batch_format="numpy")
        if unstable == 0:
            return stars, rounds
        edges = (stars.map_batches(larger_end, fn_kwargs={"num_buckets": num_buckets}, batch_format="numpy")
                 .groupby("bucket", num_partitions=num_buckets)
                 .map_groups(small_star_group, batch_format="numpy")).materialize()
    raise RuntimeError(f"connected components did not converge in {max_iterations} rounds; "
                       "raise data.minhash.max_iterations")


@sort_shuffle()
def run_near_dedup(doc_files: list[str], out_dir: Path, num_buckets: int, mh: Any) -> dict[str, int]:
    """Write near-duplicate removals (part, order, duplicate_of) under ``out_dir``."""
    ds = read_docs(doc_files, ["order", "id", "sig"])
    bands = ds.map_batches(explode_bands, batch_format="numpy", fn_kwargs={
        "num_bands": mh.num_bands, "rows_per_band": mh.rows_per_band, "num_buckets": num_buckets})
    edges = (bands.groupby("bucket", num_partitions=num_buckets)
             .map_groups(verify_group, batch_format="numpy",
                         fn_kwargs={"threshold": mh.threshold, "max_comparisons": mh.max_comparisons})).materialize()
    num_edges = edges.count()
    if num_edges == 0:
        return {"edges": 0, "rounds": 0, "removed": 0}
    stars, rounds = connected_components(edges.select_columns(["a", "b"]), num_buckets, mh.max_iterations)
    members = stars.map_batches(lambda b: {"key": b["a"], "leaf": b["b"], "id": np.full(len(b["a"]), "", dtype=object)},
                                batch_format="numpy")
    endpoints = edges.map_batches(
        lambda b: {"key": np.r_[b["a"], b["b"]], "leaf": np.full(2 * len(b["a"]), -1, np.int64),
                   "id": np.r_[b["id_a"], b["id_b"]]}, batch_format="numpy")
    removed = (members.union(endpoints)
               .map_batches(join_rows, fn_kwargs={"num_buckets": num_buckets}, batch_format="numpy")
               .groupby("bucket", num_partitions=num_buckets)
               .map_groups(resolve_root_ids, batch_format="numpy")).materialize()
    count = removed.count()
    if count:
        removed.write_parquet(str(out_dir), partition_cols=["part"])
    return {"edges": int(num_edges), "rounds": rounds, "removed": int(count)}



def dedup_local(orders: np.ndarray, ids: list[str], exact_keys: list[str], sigs: list[bytes], mh: Any,
                exact: bool = True, near: bool = True) -> dict[int, tuple[str, str]]:
    """The same group functions on one in-memory batch (tests, benchmarks, tiny inputs):
    removed order -> (step, duplicate_of id). Exact removals take precedence, as in stage 3."""
    from orchestrator.data.components import connected_components_local

    orders = np.asarray(orders, np.int64)
    id_arr = np.asarray(ids, dtype=object)
    removals: dict[int, tuple[str, str]] = {}
    if exact:
        r = exact_group({"order": orders, "id": id_arr, "exact_key": np.asarray(exact_keys, dtype=object)})
        removals.update({int(o): ("exact_dedup", d) for o, d in zip(r["order"], r["duplicate_of"])})
    if near:
        bands = explode_bands({"order": orders, "id": id_arr, "sig": np.asarray(sigs, dtype=object)},
                              mh.num_bands, mh.rows_per_band, 1)
        edges = verify_group(bands, mh.threshold, mh.max_comparisons)
        id_of = dict(zip(orders.tolist(), ids))
        for node, root in connected_components_local(edges["a"], edges["b"], mh.max_iterations).items():
            if node != root and node not in removals:
                removals[node] = ("near_dedup", id_of[root])
    return removals

"""Exact and MinHash near-duplicate removal as file-backed shuffles (stage 2 of data_prep).

Nothing here pulls documents or signatures into one process: every step is a group-by over hash
partitions (``bucket`` column) run by :mod:`orchestrator.data.shuffle` (Ray Data tasks that scatter
rows to per-bucket files, then one task per bucket), whose key and group functions below wrap the
vectorised pure functions of :mod:`orchestrator.data.minhash` and :mod:`orchestrator.data.components`.

1. exact: group rows by hash(exact_key); every row whose key appeared at a smaller order is removed.
2. near: explode each document into one row per LSH band (band key, order, signature); group by
   hash(band key); within each bucket verify candidates on the signatures (estimated Jaccard >=
   threshold) -> edges between documents.
3. connected components of the edge graph by alternating large-star / small-star group-bys until no
   node changes (Kiveris et al. 2014); each member is removed as a duplicate of its component's
   smallest order (its first occurrence in the input).
4. the root's id is attached with one more group-by (a join by order against the edge endpoints).

Removals are written as Parquet partitioned by input partition (``<out>/removals/part=K``), so stage 3
reads only its own.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from orchestrator.data import shuffle
from orchestrator.data.components import large_star, small_star

log = logging.getLogger(__name__)
GOLDEN = np.uint64(0x9E3779B97F4A7C15)
ID_BYTES = 32  # allowance for a document id in the bucket-size estimates
EXACT_ROW_BYTES = 16 + 64 + ID_BYTES  # order, hex key, id


def near_row_bytes(num_bands: int, rows_per_band: int) -> int:
    """Bytes of one band row of the near-dedup shuffle: band key, order, signature, id."""
    return 16 + 4 * num_bands * rows_per_band + ID_BYTES


def bucket_of(values: np.ndarray, num_buckets: int) -> np.ndarray:
    """Well-mixed hash partition of integer keys."""
    with np.errstate(over="ignore"):
        mixed = (np.asarray(values).astype(np.uint64) * GOLDEN) >> np.uint64(29)
    return (mixed % np.uint64(num_buckets)).astype(np.int64)


def _part_of(orders: np.ndarray) -> np.ndarray:
    return (np.asarray(orders, np.int64) >> 32).astype(np.int64)


def _sigs(column: np.ndarray) -> np.ndarray:
    return np.frombuffer(b"".join(column), dtype=np.uint32).reshape(len(column), -1)


def _ids(values: list[Any]) -> np.ndarray:
    return np.array(values, dtype=object) if values else np.empty(0, dtype=object)


# ----- group / map functions (run inside Ray Data tasks) -----------------------------------------

def exact_buckets(batch: dict[str, np.ndarray], num_buckets: int) -> dict[str, np.ndarray]:
    keys = np.array([int(k[:16], 16) for k in batch["exact_key"]], dtype=np.uint64)
    return {**batch, "bucket": bucket_of(keys, num_buckets)}


def exact_group(batch: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    from orchestrator.data.minhash import first_occurrences

    orders = np.asarray(batch["order"], np.int64)
    removed, reps = first_occurrences(np.asarray(batch["exact_key"], dtype=str), orders)
    id_of = dict(zip(orders.tolist(), batch["id"]))
    return {"part": _part_of(removed), "order": removed,
            "duplicate_of": _ids([id_of[r] for r in reps.tolist()])}, {}


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


def verify_group(batch: dict[str, np.ndarray], threshold: float,
                 max_comparisons: int) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    from orchestrator.data.minhash import verify_buckets

    orders = np.asarray(batch["order"], np.int64)
    a, b = verify_buckets(np.asarray(batch["band_key"], np.uint64), orders, _sigs(batch["sig"]),
                          threshold, max_comparisons)
    id_of = dict(zip(orders.tolist(), batch["id"]))
    return {"a": a, "b": b, "id_a": _ids([id_of[x] for x in a.tolist()]),
            "id_b": _ids([id_of[x] for x in b.tolist()])}, {}


def both_ways(batch: dict[str, np.ndarray], num_buckets: int) -> dict[str, np.ndarray]:
    src = np.r_[batch["a"], batch["b"]].astype(np.int64)
    dst = np.r_[batch["b"], batch["a"]].astype(np.int64)
    return {"src": src, "dst": dst, "bucket": bucket_of(src, num_buckets)}


def larger_end(batch: dict[str, np.ndarray], num_buckets: int) -> dict[str, np.ndarray]:
    src = np.asarray(batch["b"], np.int64)
    return {"src": src, "dst": np.asarray(batch["a"], np.int64), "bucket": bucket_of(src, num_buckets)}


def large_star_group(batch: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    a, b, unstable = large_star(batch["src"], batch["dst"])
    return {"a": a, "b": b}, {"unstable": unstable}


def small_star_group(batch: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    a, b = small_star(batch["src"], batch["dst"])
    return {"a": a, "b": b}, {}


def member_rows(batch: dict[str, np.ndarray], num_buckets: int) -> dict[str, np.ndarray]:
    """Rows of the root-id join for star edges (root a, member b), keyed by the root."""
    key = np.asarray(batch["a"], np.int64)
    return {"key": key, "leaf": np.asarray(batch["b"], np.int64), "id": np.full(len(key), "", dtype=object),
            "bucket": bucket_of(key, num_buckets)}


def endpoint_rows(batch: dict[str, np.ndarray], num_buckets: int) -> dict[str, np.ndarray]:
    """Rows of the root-id join that carry each edge endpoint's id, keyed by the endpoint (leaf -1)."""
    key = np.r_[batch["a"], batch["b"]].astype(np.int64)
    return {"key": key, "leaf": np.full(len(key), -1, np.int64), "id": np.r_[batch["id_a"], batch["id_b"]],
            "bucket": bucket_of(key, num_buckets)}


def resolve_root_ids(batch: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    key = np.asarray(batch["key"], np.int64)
    leaf = np.asarray(batch["leaf"], np.int64)
    is_id = leaf < 0
    id_of = dict(zip(key[is_id].tolist(), np.asarray(batch["id"], dtype=object)[is_id]))
    roots, leaves = key[~is_id], leaf[~is_id]
    return {"part": _part_of(leaves), "order": leaves,
            "duplicate_of": _ids([id_of[r] for r in roots.tolist()])}, {}


# ----- drivers ---------------------------------------------------------------------------------

def run_exact_dedup(doc_files: list[str], out_dir: Path, num_docs: int, bucket_mb: int,
                    fixed_buckets: Optional[int] = None) -> int:
    """Write exact-duplicate removals under ``out_dir/removals/part=K``; returns the count."""
    n = shuffle.num_buckets_for(num_docs, EXACT_ROW_BYTES, bucket_mb, fixed_buckets)
    log.info("exact dedup: %d documents, %d buckets", num_docs, n)
    shuffle.scatter(doc_files, out_dir / "keys", exact_buckets, "docs", columns=["order", "id", "exact_key"],
                    num_buckets=n)
    stats = shuffle.gather(out_dir / "keys", out_dir / "removals", n, exact_group, split_column="part")
    shuffle.remove(out_dir / "keys")
    return stats.get("rows_out", 0)


def connected_components(edge_files: list[str], work: Path, num_edges: int, bucket_mb: int, max_iterations: int,
                         fixed_buckets: Optional[int] = None) -> tuple[list[str], int]:
    """Star-form edges (a = component root, b = member) of the edges (columns a, b) in ``edge_files``:
    returns the files holding them and the number of large-star rounds."""
    n = shuffle.num_buckets_for(2 * num_edges, 24, bucket_mb, fixed_buckets)
    files = edge_files
    for rounds in range(1, max_iterations + 1):
        large = work / f"r{rounds:03d}-large"
        shuffle.scatter(files, work / f"r{rounds:03d}-large-in", both_ways, "edges", columns=["a", "b"], num_buckets=n)
        unstable = shuffle.gather(work / f"r{rounds:03d}-large-in", large, n, large_star_group).get("unstable", 0)
        shuffle.remove(work / f"r{rounds:03d}-large-in")
        if unstable == 0:
            return shuffle.output_files(large), rounds
        small = work / f"r{rounds:03d}-small"
        shuffle.scatter(shuffle.output_files(large), work / f"r{rounds:03d}-small-in", larger_end, "edges",
                        num_buckets=n)
        shuffle.gather(work / f"r{rounds:03d}-small-in", small, n, small_star_group)
        shuffle.remove(work / f"r{rounds:03d}-small-in")
        files = shuffle.output_files(small)
    raise RuntimeError(f"connected components did not converge in {max_iterations} rounds; "
                       "raise data.minhash.max_iterations")


def run_near_dedup(doc_files: list[str], out_dir: Path, num_docs: int, mh: Any, bucket_mb: int,
                   fixed_buckets: Optional[int] = None) -> dict[str, Any]:
    """Write near-duplicate removals (order, duplicate_of) under ``out_dir/removals/part=K``; returns
    counts and the wall seconds of each phase."""
    n = shuffle.num_buckets_for(num_docs * mh.num_bands, near_row_bytes(mh.num_bands, mh.rows_per_band),
                                bucket_mb, fixed_buckets)
    log.info("near dedup: %d documents, %d LSH buckets", num_docs, n)
    seconds: dict[str, float] = {}
    t = time.perf_counter()

    def lap(phase: str) -> None:
        nonlocal t
        now = time.perf_counter()
        seconds[phase] = round(now - t, 2)
        t = now

    shuffle.scatter(doc_files, out_dir / "bands", explode_bands, "docs", columns=["order", "id", "sig"],
                    num_bands=mh.num_bands, rows_per_band=mh.rows_per_band, num_buckets=n)
    lap("bands")
    num_edges = shuffle.gather(out_dir / "bands", out_dir / "edges", n, verify_group, threshold=mh.threshold,
                               max_comparisons=mh.max_comparisons).get("rows_out", 0)
    shuffle.remove(out_dir / "bands")
    lap("verify")
    if num_edges == 0:
        return {"edges": 0, "rounds": 0, "removed": 0, "buckets": n, "seconds": seconds}
    edge_files = shuffle.output_files(out_dir / "edges")
    stars, rounds = connected_components(edge_files, out_dir / "components", num_edges, bucket_mb,
                                         mh.max_iterations, fixed_buckets)
    lap("components")
    m = shuffle.num_buckets_for(3 * num_edges, 16 + ID_BYTES, bucket_mb, fixed_buckets)
    shuffle.scatter(stars, out_dir / "join", member_rows, "stars", num_buckets=m)
    shuffle.scatter(edge_files, out_dir / "join", endpoint_rows, "edges", num_buckets=m)
    removed = shuffle.gather(out_dir / "join", out_dir / "removals", m, resolve_root_ids,
                             split_column="part").get("rows_out", 0)
    shuffle.remove(out_dir / "join")
    lap("root_ids")
    return {"edges": int(num_edges), "rounds": rounds, "removed": int(removed), "buckets": n, "seconds": seconds}


def dedup_local(orders: np.ndarray, ids: list[str], exact_keys: list[str], sigs: list[bytes], mh: Any,
                exact: bool = True, near: bool = True) -> dict[int, tuple[str, str]]:
    """The same group functions on one in-memory batch (tests, benchmarks, tiny inputs):
    removed order -> (step, duplicate_of id). Exact removals take precedence, as in stage 3."""
    from orchestrator.data.components import connected_components_local

    orders = np.asarray(orders, np.int64)
    id_arr = np.asarray(ids, dtype=object)
    removals: dict[int, tuple[str, str]] = {}
    if exact:
        r, _ = exact_group({"order": orders, "id": id_arr, "exact_key": np.asarray(exact_keys, dtype=object)})
        removals.update({int(o): ("exact_dedup", d) for o, d in zip(r["order"], r["duplicate_of"])})
    if near:
        bands = explode_bands({"order": orders, "id": id_arr, "sig": np.asarray(sigs, dtype=object)},
                              mh.num_bands, mh.rows_per_band, 1)
        edges, _ = verify_group(bands, mh.threshold, mh.max_comparisons)
        id_of = dict(zip(orders.tolist(), ids))
        for node, root in connected_components_local(edges["a"], edges["b"], mh.max_iterations).items():
            if node != root and node not in removals:
                removals[node] = ("near_dedup", id_of[root])
    return removals

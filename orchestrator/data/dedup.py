"""Exact and MinHash near-duplicate removal as file-backed shuffles (stage 2 of data_prep).

Nothing here pulls documents or signatures into one process: every step is a group-by over hash
partitions (``bucket`` column) run by :mod:`orchestrator.data.shuffle` (Ray Data tasks that scatter
rows to per-bucket files, then one task per bucket), whose key and group functions below wrap the
vectorised pure functions of :mod:`orchestrator.data.minhash` and :mod:`orchestrator.data.components`.

1. exact: group rows by hash(exact_key); every row whose key appeared at a smaller order is removed.
2. near: explode each document into one row per LSH band (band key, order, id); group by
   hash(band key); each bucket's candidate pairs (each member with the earlier of its first
   ``max_comparisons`` members) are grouped by their later document, which is linked to the first
   earlier candidate whose *exact* shingle Jaccard (from the shingle sets stage 1 wrote,
   :mod:`orchestrator.data.shingle_store`) is >= threshold. With ``verification=estimate`` the band
   rows carry the signatures instead and each bucket links members on the estimated Jaccard.
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
from orchestrator.data.minhash import detection_probability

log = logging.getLogger(__name__)
GOLDEN = np.uint64(0x9E3779B97F4A7C15)
ID_BYTES = 32  # allowance for a document id in the bucket-size estimates
EXACT_ROW_BYTES = 16 + 64 + ID_BYTES  # order, hex key, id


PAIR_ROW_BYTES = 16 + 2 * ID_BYTES  # a candidate pair: two orders, two ids


def near_row_bytes(num_bands: int, rows_per_band: int, with_sig: bool = True) -> int:
    """Bytes of one band row of the near-dedup shuffle: band key, order, id and, when candidates are
    verified on the estimate, the signature."""
    return 16 + (4 * num_bands * rows_per_band if with_sig else 0) + ID_BYTES


def near_dedup_plan(data: Any) -> dict[str, Any]:
    """What near dedup will do and cost, for the dry-run plan: verification, shuffle bytes per document
    (the band rows of one document), docs per LSH bucket, and the extra disk and work of exact
    verification. ``data`` is the ``data`` config group."""
    mh = data.minhash
    exact = mh.verification == "jaccard"
    doc_bytes = mh.num_bands * near_row_bytes(mh.num_bands, mh.rows_per_band, with_sig=not exact)
    s = mh.threshold
    return {
        "near_dedup_verification": mh.verification,
        "near_dedup_verification_cost": (
            "exact shingle Jaccard per candidate pair: stage 1 writes 8 bytes per distinct shingle (~8 bytes "
            "per word kept), one more shuffle of the candidate pairs (~80 bytes each), one lookup per pair"
            if exact else "signature estimate (sd ~%.3f at Jaccard %.2f): no shingle files, no pair shuffle, "
            "signatures ride in the band rows" % ((s * (1 - s) / (mh.num_bands * mh.rows_per_band)) ** 0.5, s)),
        "lsh_candidate_probability_at_threshold": round(detection_probability(s, mh.num_bands, mh.rows_per_band), 4),
        "near_dedup_shuffle_bytes_per_doc": doc_bytes,
        "near_dedup_docs_per_bucket": ("fixed: data.shuffle_partitions" if data.shuffle_partitions
                                       else (data.shuffle_partition_mb << 20) // doc_bytes),
    }


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
                  num_buckets: int, with_sig: bool = True) -> dict[str, np.ndarray]:
    """One row per (document, band); the signature rides along only for ``verification=estimate``."""
    from orchestrator.data.minhash import band_keys

    sigs = _sigs(batch["sig"])
    keys = np.stack([band_keys(s, num_bands, rows_per_band) for s in sigs]) if len(sigs) else np.empty((0, num_bands), np.uint64)
    n = len(sigs)
    flat = keys.reshape(-1)
    rows = {"band_key": flat, "order": np.repeat(np.asarray(batch["order"], np.int64), num_bands),
            "id": np.repeat(np.asarray(batch["id"], dtype=object), num_bands),
            "bucket": bucket_of(flat, num_buckets) if n else np.empty(0, np.int64)}
    if with_sig:
        rows["sig"] = np.repeat(np.asarray(batch["sig"], dtype=object), num_bands)
    return rows


def verify_group(batch: dict[str, np.ndarray], threshold: float,
                 max_comparisons: int) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    from orchestrator.data.minhash import verify_buckets

    orders = np.asarray(batch["order"], np.int64)
    a, b = verify_buckets(np.asarray(batch["band_key"], np.uint64), orders, _sigs(batch["sig"]),
                          threshold, max_comparisons)
    id_of = dict(zip(orders.tolist(), batch["id"]))
    return {"a": a, "b": b, "id_a": _ids([id_of[x] for x in a.tolist()]),
            "id_b": _ids([id_of[x] for x in b.tolist()])}, {}


def candidate_group(batch: dict[str, np.ndarray], max_comparisons: int) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """The distinct candidate pairs of the LSH buckets in a batch (verified later, on shingles)."""
    from orchestrator.data.minhash import candidate_pairs

    orders = np.asarray(batch["order"], np.int64)
    a, b = candidate_pairs(np.asarray(batch["band_key"], np.uint64), orders, max_comparisons)
    id_of = dict(zip(orders.tolist(), batch["id"]))
    return {"a": a, "b": b, "id_a": _ids([id_of[x] for x in a.tolist()]),
            "id_b": _ids([id_of[x] for x in b.tolist()])}, {}


def by_later(batch: dict[str, np.ndarray], num_buckets: int) -> dict[str, np.ndarray]:
    """Candidate pairs keyed by their later document, so that all of its candidates meet in one task."""
    return {**batch, "bucket": bucket_of(np.asarray(batch["b"], np.int64), num_buckets)}


def verify_exact_group(batch: dict[str, np.ndarray], threshold: float,
                       shingle_dir: str) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Edges of the candidate pairs whose exact shingle Jaccard is >= threshold (first match per later doc)."""
    from orchestrator.data.minhash import verify_pairs
    from orchestrator.data.shingle_store import ShingleStore

    a, b = np.asarray(batch["a"], np.int64), np.asarray(batch["b"], np.int64)
    ea, eb = verify_pairs(a, b, ShingleStore(shingle_dir).get, threshold)
    id_of = dict(zip(a.tolist(), batch["id_a"])) | dict(zip(b.tolist(), batch["id_b"]))
    return {"a": ea, "b": eb, "id_a": _ids([id_of[x] for x in ea.tolist()]),
            "id_b": _ids([id_of[x] for x in eb.tolist()])}, {"candidates": len(np.unique(np.stack([a, b]), axis=1).T)}


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


def _verified_edges(doc_files: list[str], out_dir: Path, n: int, mh: Any, bucket_mb: int,
                    fixed_buckets: Optional[int], lap: Any) -> dict[str, int]:
    """Band rows -> LSH buckets -> verified edges under ``out_dir/edges``; returns edge/candidate counts.

    ``estimate``: each bucket verifies its members on their signatures. ``jaccard``: each bucket emits
    its candidate pairs, which a second shuffle groups by later document, where the exact shingle
    Jaccard of each pair is computed from the stage-1 shingle files.
    """
    exact = mh.verification == "jaccard"
    shuffle.scatter(doc_files, out_dir / "bands", explode_bands, "docs", columns=["order", "id", "sig"],
                    num_bands=mh.num_bands, rows_per_band=mh.rows_per_band, num_buckets=n, with_sig=not exact)
    lap("bands")
    if not exact:
        edges = shuffle.gather(out_dir / "bands", out_dir / "edges", n, verify_group, threshold=mh.threshold,
                               max_comparisons=mh.max_comparisons).get("rows_out", 0)
        shuffle.remove(out_dir / "bands")
        lap("verify")
        return {"edges": edges}
    pairs = shuffle.gather(out_dir / "bands", out_dir / "pairs", n, candidate_group,
                           max_comparisons=mh.max_comparisons).get("rows_out", 0)
    shuffle.remove(out_dir / "bands")
    lap("candidates")
    if pairs == 0:
        return {"edges": 0, "candidates": 0}
    m = shuffle.num_buckets_for(pairs, PAIR_ROW_BYTES, bucket_mb, fixed_buckets)
    shuffle.scatter(shuffle.output_files(out_dir / "pairs"), out_dir / "by_later", by_later, "pairs", num_buckets=m)
    shuffle.remove(out_dir / "pairs")
    from orchestrator.data.shingle_store import shingle_dir_of

    stats = shuffle.gather(out_dir / "by_later", out_dir / "edges", m, verify_exact_group, threshold=mh.threshold,
                           shingle_dir=str(shingle_dir_of(doc_files[0])))
    shuffle.remove(out_dir / "by_later")
    lap("verify")
    return {"edges": stats.get("rows_out", 0), "candidates": stats.get("candidates", 0)}


def run_near_dedup(doc_files: list[str], out_dir: Path, num_docs: int, mh: Any, bucket_mb: int,
                   fixed_buckets: Optional[int] = None) -> dict[str, Any]:
    """Write near-duplicate removals (order, duplicate_of) under ``out_dir/removals/part=K``; returns
    counts and the wall seconds of each phase."""
    row_bytes = near_row_bytes(mh.num_bands, mh.rows_per_band, with_sig=mh.verification == "estimate")
    n = shuffle.num_buckets_for(num_docs * mh.num_bands, row_bytes, bucket_mb, fixed_buckets)
    log.info("near dedup: %d documents, %d LSH buckets, verification %s", num_docs, n, mh.verification)
    seconds: dict[str, float] = {}
    t = time.perf_counter()

    def lap(phase: str) -> None:
        nonlocal t
        now = time.perf_counter()
        seconds[phase] = round(now - t, 2)
        t = now

    counts = _verified_edges(doc_files, out_dir, n, mh, bucket_mb, fixed_buckets, lap)
    num_edges = counts["edges"]
    base = {**counts, "verification": mh.verification, "buckets": n, "seconds": seconds}
    if num_edges == 0:
        return {**base, "rounds": 0, "removed": 0}
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
    return {**base, "edges": int(num_edges), "rounds": rounds, "removed": int(removed)}


def dedup_local(orders: np.ndarray, ids: list[str], exact_keys: list[str], sigs: list[bytes], mh: Any,
                exact: bool = True, near: bool = True,
                shingle_sets: Optional[list[np.ndarray]] = None) -> dict[int, tuple[str, str]]:
    """The same group functions on one in-memory batch (tests, benchmarks, tiny inputs):
    removed order -> (step, duplicate_of id). Exact removals take precedence, as in stage 3.
    ``verification=jaccard`` needs ``shingle_sets`` (each document's distinct shingle hashes)."""
    from orchestrator.data.components import connected_components_local
    from orchestrator.data.minhash import candidate_pairs, verify_pairs

    orders = np.asarray(orders, np.int64)
    id_arr = np.asarray(ids, dtype=object)
    removals: dict[int, tuple[str, str]] = {}
    if exact:
        r, _ = exact_group({"order": orders, "id": id_arr, "exact_key": np.asarray(exact_keys, dtype=object)})
        removals.update({int(o): ("exact_dedup", d) for o, d in zip(r["order"], r["duplicate_of"])})
    if near:
        bands = explode_bands({"order": orders, "id": id_arr, "sig": np.asarray(sigs, dtype=object)},
                              mh.num_bands, mh.rows_per_band, 1)
        if mh.verification == "jaccard":
            assert shingle_sets is not None, "verification=jaccard needs the shingle sets"
            sets = dict(zip(orders.tolist(), shingle_sets))
            a, b = candidate_pairs(bands["band_key"], bands["order"], mh.max_comparisons)
            edges = dict(zip("ab", verify_pairs(a, b, sets.__getitem__, mh.threshold)))
        else:
            edges, _ = verify_group(bands, mh.threshold, mh.max_comparisons)
        id_of = dict(zip(orders.tolist(), ids))
        for node, root in connected_components_local(edges["a"], edges["b"], mh.max_iterations).items():
            if node != root and node not in removals:
                removals[node] = ("near_dedup", id_of[root])
    return removals

"""Connected components by alternating large-star / small-star rounds (Kiveris et al., 2014,
"Connected Components in MapReduce and Beyond").

Both operations only need, for each node, the list of its neighbours, so each is one group-by on the
edge list: the distributed driver (:mod:`orchestrator.data.dedup`) runs them as Ray Data group-bys
over hash partitions, and these vectorised functions process one partition. At convergence every
component is a star whose centre is its smallest node, i.e. each edge is (root, member).
"""

from __future__ import annotations

import numpy as np

EMPTY = np.empty(0, dtype=np.int64)


def normalize_edges(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Undirected edges as (smaller, larger), self-loops dropped, duplicates removed."""
    lo, hi = np.minimum(a, b).astype(np.int64), np.maximum(a, b).astype(np.int64)
    keep = lo != hi
    if not keep.any():
        return EMPTY, EMPTY
    pairs = np.unique(np.stack([lo[keep], hi[keep]], axis=1), axis=0)
    return pairs[:, 0], pairs[:, 1]


def _group_min(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows sorted by src, and for each row the minimum dst of its src group."""
    order = np.lexsort((dst, src))
    src, dst = src[order], dst[order]
    starts = np.flatnonzero(np.r_[True, src[1:] != src[:-1]])
    mins = np.minimum.reduceat(dst, starts)
    sizes = np.diff(np.r_[starts, len(src)])
    return src, dst, np.repeat(mins, sizes)


def large_star(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Large-star on directed rows (u -> v) holding *both* directions of every edge of the nodes u
    present. For each u with m = min(N(u) + {u}), emits (v, m) for each neighbour v > u.

    Returns:
        (a, b, unstable): new undirected edges (normalised) and how many nodes u are not yet in
        final form (neither a star centre with only larger neighbours, nor a leaf with exactly one
        smaller neighbour). 0 unstable nodes over the whole graph means converged.
    """
    if len(src) == 0:
        return EMPTY, EMPTY, 0
    src, dst = np.asarray(src, np.int64), np.asarray(dst, np.int64)
    pairs = np.unique(np.stack([src, dst], axis=1), axis=0)
    src, dst = pairs[:, 0], pairs[:, 1]
    src, dst, mins = _group_min(src, dst)
    m = np.minimum(mins, src)
    starts = np.flatnonzero(np.r_[True, src[1:] != src[:-1]])
    degree = np.diff(np.r_[starts, len(src)])
    centre = mins[starts] > src[starts]
    leaf = (degree == 1) & (mins[starts] < src[starts])
    unstable = int((~(centre | leaf)).sum())
    emit = dst > src
    a, b = normalize_edges(dst[emit], m[emit])
    return a, b, unstable


def small_star(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Small-star on directed rows (u -> v) with v < u (each undirected edge once, keyed by its
    larger end). For each u with m = min(N(u) + {u}), emits (v, m) for v in N(u) + {u}, v != m."""
    if len(src) == 0:
        return EMPTY, EMPTY
    src, dst = np.asarray(src, np.int64), np.asarray(dst, np.int64)
    src, dst, mins = _group_min(src, dst)
    m = np.minimum(mins, src)
    a = np.r_[dst, src]
    b = np.r_[m, m]
    return normalize_edges(a, b)


def both_directions(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.r_[a, b], np.r_[b, a]


def connected_components_local(a: np.ndarray, b: np.ndarray, max_iterations: int = 100) -> dict[int, int]:
    """In-memory driver (tests and small inputs): node -> smallest node of its component, for every
    node that appears in an edge."""
    a, b = normalize_edges(np.asarray(a), np.asarray(b))
    for _ in range(max_iterations):
        src, dst = both_directions(a, b)
        a, b, unstable = large_star(src, dst)
        if unstable == 0:
            break
        a, b = small_star(b, a)  # keyed by the larger end
    else:
        raise RuntimeError(f"connected components did not converge in {max_iterations} rounds")
    roots = {int(x): int(x) for x in a}
    roots.update({int(y): int(x) for x, y in zip(a, b)})
    return roots

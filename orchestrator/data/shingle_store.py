"""On-disk shingle sets of the stage-1 documents, for the exact verification of near-duplicate candidates.

Stage 1 already hashes every document's shingles to compute its MinHash signature; it also writes
the distinct hashes (sorted uint64) of each partition to ``<work>/stage1/shingles/part-K.bin`` with an
index ``part-K.idx.npy`` (row 0: document orders, ascending; row 1: start offsets, one more than
documents). The verification task of a bucket looks pairs up by order: a binary search in the
memory-mapped index and a slice of the memory-mapped hashes, so it holds only the sets it compares
(the mapped files stay in the page cache, not on the heap), whatever the corpus size.
Disk: 8 bytes per distinct shingle (about 8 bytes per word of kept text).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np

SUBDIR = "shingles"


def shingle_dir_of(doc_file: str | Path) -> Path:
    """Where stage 1 put the shingles of the documents in ``<work>/stage1/docs/part-K.parquet``."""
    return Path(doc_file).parent.parent / SUBDIR


class ShingleWriter:
    """Append one partition's documents (in ascending order) and commit atomically."""

    def __init__(self, directory: Path, name: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.bin_path = directory / f"{name}.bin"
        self.idx_path = directory / f"{name}.idx.npy"
        self._tmp = self.bin_path.with_name(self.bin_path.name + ".tmp")
        self._f = open(self._tmp, "wb")
        self.orders: list[int] = []
        self.offsets: list[int] = [0]

    def add(self, order: int, hashes: np.ndarray) -> None:
        assert not self.orders or order > self.orders[-1], "documents must come in ascending order"
        self._f.write(np.asarray(hashes, np.uint64).tobytes())
        self.orders.append(order)
        self.offsets.append(self.offsets[-1] + len(hashes))

    def close(self) -> None:
        self._f.close()
        idx = np.zeros((2, len(self.offsets)), np.int64)
        idx[0, : len(self.orders)] = self.orders
        idx[1] = self.offsets
        tmp_idx = self.idx_path.with_name("tmp-" + self.idx_path.name)
        np.save(tmp_idx, idx)
        os.replace(tmp_idx, self.idx_path)
        os.replace(self._tmp, self.bin_path)


class ShingleStore:
    """Random access to the shingle sets by document order (order >> 32 is the partition index)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._parts: dict[int, tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]] = {}

    def _part(self, index: int) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
        if index not in self._parts:
            from orchestrator.data.partition import part_name  # partition imports this module

            name = part_name(index)
            idx = np.load(self.directory / f"{name}.idx.npy", mmap_mode="r")
            n = idx.shape[1] - 1
            data = np.memmap(self.directory / f"{name}.bin", dtype=np.uint64, mode="r") if idx[1, n] else None
            self._parts[index] = (idx[0, :n], idx[1], data)
        return self._parts[index]

    def get(self, order: int) -> np.ndarray:
        """The document's distinct shingle hashes, sorted.

        Raises:
            KeyError: no document with this order was written.
        """
        orders, offsets, data = self._part(order >> 32)
        i = int(np.searchsorted(orders, order))
        if i >= len(orders) or orders[i] != order:
            raise KeyError(order)
        start, end = int(offsets[i]), int(offsets[i + 1])
        return np.asarray(data[start:end]) if data is not None and end > start else np.empty(0, np.uint64)

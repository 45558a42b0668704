"""Atomic, resumable DeepSpeed checkpoints with the trainer's client state.

Layout under ``<output_dir>/checkpoints``::

    step_00000004/            DeepSpeed files (model/optimizer/LR-schedule shards of every rank)
        trainer_state.json    client state: step, tokens seen, sampler position, config hash, run id, ...
        rng/rank_<r>.json     per-rank python/numpy/torch RNG states
        COMMITTED             written last, after every rank finished writing
    latest                    the newest committed tag; replaced (os.replace) only after COMMITTED

A crash at any moment leaves ``latest`` on the previous committed checkpoint; an uncommitted tag
directory is ignored by :func:`latest_committed` and removed by the next save. ``latest`` has the format
of DeepSpeed's own pointer, so ``engine.load_checkpoint(root)`` agrees with it.

Public API:
    CheckpointManager(root, keep, rank, world_size).save(engine, tag, trainer_state) -> Path
    CheckpointManager.load(engine, ckpt_dir) -> dict (trainer_state; RNG restored)
    latest_committed(root) -> Optional[Path];  read_trainer_state(ckpt_dir) -> dict
    capture_rng() -> dict;  restore_rng(dict) -> None;  step_tag(step) -> str
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any, Optional

import numpy as np

from orchestrator.core.dist import barrier
from orchestrator.core.files import atomic_write_text

COMMIT_MARKER = "COMMITTED"
LATEST = "latest"
STATE_FILE = "trainer_state.json"


def step_tag(step: int) -> str:
    return f"step_{step:08d}"


def is_committed(ckpt_dir: Path) -> bool:
    return (Path(ckpt_dir) / COMMIT_MARKER).is_file()


def committed_tags(root: Path) -> list[Path]:
    """Committed checkpoint directories, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_") and is_committed(p))


def latest_committed(root: Path) -> Optional[Path]:
    """The checkpoint ``latest`` points to if it is committed, else the newest committed one, else None."""
    root = Path(root)
    pointer = root / LATEST
    if pointer.is_file():
        cand = root / pointer.read_text().strip()
        if is_committed(cand):
            return cand
    tags = committed_tags(root)
    return tags[-1] if tags else None


def read_trainer_state(ckpt_dir: Path) -> dict[str, Any]:
    return json.loads((Path(ckpt_dir) / STATE_FILE).read_text())


def capture_rng() -> dict[str, Any]:
    """This process's python/numpy/torch (and CUDA) RNG states as JSON-able data."""
    import torch  # here, not at module level: the driver reads checkpoints without importing torch (#13)

    np_state = np.random.get_state()
    state = {
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state().tolist()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    import torch

    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(torch.tensor(state["cuda"], dtype=torch.uint8))


class CheckpointManager:
    """Saves and loads committed checkpoints of one run (every rank constructs one; all call save/load).

    Args:
        root: the checkpoint root (``checkpoint_root(cfg)``: a filesystem shared by all ranks, or with
            ``remote`` this node's local mirror).
        keep: newest committed checkpoints to keep (``trainer.keep_checkpoints``).
        rank: this process's global rank.
        world_size: number of ranks.
        remote: ``checkpoint_uri(cfg)`` when ``cluster.storage_path`` is an object-store URI: one rank per
            node uploads its node's files there, rank 0 commits there (:mod:`orchestrator.engine.storage`).
        local_rank: this process's rank on its node (local rank 0 uploads and downloads for the node).
    """

    def __init__(self, root: str | Path, keep: int, rank: int, world_size: int, remote: Optional[str] = None,
                 local_rank: int = 0) -> None:
        self.root = Path(root)
        self.keep = keep
        self.rank = rank
        self.world_size = world_size
        self.local_rank = local_rank
        self.remote = None
        if remote:
            from orchestrator.engine.storage import RemoteCheckpoints

            self.remote = RemoteCheckpoints(remote)
        """With ``cluster.storage_path`` a URI: the store (``root`` is then this node's local mirror)."""

    def by_node(self, work: Any) -> None:
        """Collective: ``work()`` on one rank per node (local rank 0), one node after the other (two nodes
        that see the same directory, e.g. nodes of one machine, never write the same files at once)."""
        for r in range(self.world_size):
            if r == self.rank and self.local_rank == 0:
                work()
            barrier()

    def fetch(self, ckpt_dir: Optional[str]) -> Optional[str]:
        """Collective: with a store, a checkpoint of this run (``<uri>/<tag>`` or a path in this node's
        mirror) is downloaded by every node into its local mirror unless it has it committed there already;
        returns the local directory to load (``ckpt_dir`` itself otherwise)."""
        if self.remote is None or not ckpt_dir:
            return ckpt_dir
        if ckpt_dir.startswith(self.remote.uri + "/"):
            ckpt_dir = str(self.root / ckpt_dir[len(self.remote.uri) + 1:])
        if Path(ckpt_dir).parent == self.root:
            self.by_node(lambda: self.remote.download(Path(ckpt_dir).name, self.root))
        return ckpt_dir

    def save(self, engine: Any, tag: str, trainer_state: dict[str, Any]) -> Path:
        """Collective: write the engine's checkpoint, RNG states and ``trainer_state`` under ``tag``,
        then commit it, move ``latest`` and prune. Returns the committed directory."""
        path = self.root / tag
        if self.rank == 0 or (self.remote is not None and self.local_rank == 0):  # a node-local mirror: each node
            self.root.mkdir(parents=True, exist_ok=True)
            if path.exists():  # leftover of a crash while writing this tag: never mix old and new files
                shutil.rmtree(path, ignore_errors=self.remote is not None)
        barrier()
        engine.save_checkpoint(str(self.root), tag=tag, save_latest=False)
        (path / "rng").mkdir(parents=True, exist_ok=True)
        atomic_write_text(path / "rng" / f"rank_{self.rank}.json", json.dumps(capture_rng()))
        if self.rank == 0:
            atomic_write_text(path / STATE_FILE, json.dumps(trainer_state, indent=1, sort_keys=True))
        barrier()  # every rank's shards are on disk before the commit marker exists
        if self.remote is not None:  # every node's files on the store before its commit marker exists
            self.by_node(lambda: self.remote.upload(path))
        if self.rank == 0:
            if self.remote is not None:
                self.remote.commit(tag)
            self._commit(path)
            if self.remote is not None:
                self.remote.prune(self.keep, current=tag)
        barrier()
        if self.remote is not None:  # the other nodes' mirrors: the store holds their files now
            self.by_node(lambda: self.rank == 0 or self.prune(current=path))
        return path

    def _commit(self, path: Path) -> None:
        atomic_write_text(path / COMMIT_MARKER, "ok\n")
        atomic_write_text(self.root / LATEST, path.name)
        self.prune(current=path)

    def prune(self, current: Optional[Path] = None) -> None:
        """Delete committed checkpoints beyond the newest ``keep`` and uncommitted leftovers."""
        tags = committed_tags(self.root)
        for old in tags[: max(0, len(tags) - self.keep)]:
            shutil.rmtree(old, ignore_errors=True)
        for p in self.root.iterdir():
            if p.is_dir() and p.name.startswith("step_") and not is_committed(p) and p != current:
                shutil.rmtree(p, ignore_errors=True)

    def load(self, engine: Any, ckpt_dir: str | Path) -> dict[str, Any]:
        """Collective: load model, optimizer and LR schedule from a committed checkpoint, restore this
        rank's RNG state; returns the trainer state."""
        ckpt_dir = Path(ckpt_dir)
        if not is_committed(ckpt_dir):
            raise FileNotFoundError(f"{ckpt_dir} is not a committed checkpoint (no {COMMIT_MARKER} marker)")
        load_path, _ = engine.load_checkpoint(str(ckpt_dir.parent), tag=ckpt_dir.name, load_optimizer_states=True,
                                              load_lr_scheduler_states=True)
        if load_path is None:
            raise FileNotFoundError(f"DeepSpeed found no checkpoint in {ckpt_dir}")
        state = read_trainer_state(ckpt_dir)
        rng_file = ckpt_dir / "rng" / f"rank_{self.rank}.json"
        if rng_file.is_file():
            restore_rng(json.loads(rng_file.read_text()))
        return state

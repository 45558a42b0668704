"""Atomic PPO checkpoints: both trained roles plus the controller's state, committed together.

Layout under ``<output_dir>/checkpoints`` (same commit protocol as :mod:`orchestrator.engine.checkpoint`)::

    step_00000010/
        actor/ds/...        DeepSpeed engine of the actor (weights, optimizer, LR schedule), per rank
        actor/rng_rank_<r>.json
        critic/ds/...       the critic's engine
        critic/rng_rank_<r>.json
        ppo_state.json      step, KL controller, reward normaliser, prompt sampler position, run id
        rng/driver.json     the controller process's RNG
        COMMITTED           written last
    latest
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Optional

from orchestrator.core.files import atomic_write_text
from orchestrator.engine.checkpoint import (
    COMMIT_MARKER,
    LATEST,
    capture_rng,
    committed_tags,
    is_committed,
    latest_committed,
    restore_rng,
    step_tag,
)

STATE_FILE = "ppo_state.json"

__all__ = ["save_ppo_checkpoint", "load_ppo_state", "latest_committed", "STATE_FILE"]


def save_ppo_checkpoint(root: Path, step: int, role_groups: list[Any], state: dict[str, Any], keep: int) -> Path:
    """Write every trained role's shards and the controller state, then commit and prune."""
    import ray

    root = Path(root)
    path = root / step_tag(step)
    root.mkdir(parents=True, exist_ok=True)
    if path.exists():  # leftover of a crash while writing this tag
        shutil.rmtree(path)
    path.mkdir()
    ray.get([f for g in role_groups for f in g.call("save", str(path))])
    (path / "rng").mkdir(exist_ok=True)
    atomic_write_text(path / "rng" / "driver.json", json.dumps(capture_rng()))
    atomic_write_text(path / STATE_FILE, json.dumps(state, indent=1, sort_keys=True))
    atomic_write_text(path / COMMIT_MARKER, "ok\n")
    atomic_write_text(root / LATEST, path.name)
    tags = committed_tags(root)
    for old in tags[: max(0, len(tags) - keep)]:
        shutil.rmtree(old, ignore_errors=True)
    for p in root.iterdir():
        if p.is_dir() and p.name.startswith("step_") and not is_committed(p) and p != path:
            shutil.rmtree(p, ignore_errors=True)
    return path


def load_ppo_state(path: Path, role_groups: list[Any]) -> dict[str, Any]:
    """Load the roles' engines and RNG from a committed checkpoint; returns the controller state."""
    import ray

    path = Path(path)
    if not is_committed(path):
        raise FileNotFoundError(f"{path} is not a committed PPO checkpoint (no {COMMIT_MARKER})")
    ray.get([f for g in role_groups for f in g.call("load", str(path))])
    rng = path / "rng" / "driver.json"
    if rng.is_file():
        restore_rng(json.loads(rng.read_text()))
    return json.loads((path / STATE_FILE).read_text())


def find_resume_checkpoint(root: Path, resume: str) -> Optional[Path]:
    """``auto`` = newest committed checkpoint (None if there is none); ``never`` = None; else the path."""
    if resume == "never":
        if committed_tags(root):
            from orchestrator.config.errors import ConfigError

            raise ConfigError("resume", f"{root} already holds checkpoints and resume=never would overwrite them",
                              "use resume=auto to continue, or another run_name")
        return None
    if resume == "auto":
        return latest_committed(root)
    path = Path(resume)
    return path if is_committed(path) else latest_committed(path)

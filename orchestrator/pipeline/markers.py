"""Completion markers: a stage is finished when its marker exists and its outputs still match it."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Optional

MARKER = "_COMPLETE.json"


def tree_digest(path: str | Path) -> str:
    """sha256 over the relative names and contents of every file under ``path`` (or of one file)."""
    root = Path(path)
    h = hashlib.sha256()
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    for p in files:
        h.update(str(p.relative_to(root) if p != root else p.name).encode())
        with open(p, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def write_marker(stage_dir: str | Path, *, config_hash: str, outputs: dict[str, str], result: dict[str, Any]) -> None:
    """Record a finished stage: config hash, digest of each output path, and its result summary."""
    stage_dir = Path(stage_dir)
    marker = {
        "config_hash": config_hash,
        "outputs": {name: {"path": p, "digest": tree_digest(p)} for name, p in outputs.items()},
        "result": result,
        "finished_at": time.time(),
    }
    tmp = stage_dir / (MARKER + ".tmp")
    tmp.write_text(json.dumps(marker, indent=2, default=str))
    os.replace(tmp, stage_dir / MARKER)


def read_valid_marker(stage_dir: str | Path, config_hash: str) -> Optional[dict[str, Any]]:
    """The marker if the stage is finished with the same config and untouched outputs, else None."""
    path = Path(stage_dir) / MARKER
    if not path.exists():
        return None
    marker = json.loads(path.read_text())
    if marker.get("config_hash") != config_hash:
        return None
    for out in marker.get("outputs", {}).values():
        if not Path(out["path"]).exists() or tree_digest(out["path"]) != out["digest"]:
            return None
    return marker

"""The manifest every dataset directory carries (written last, so its presence means "complete")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"


def load_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of a complete dataset directory.

    Raises:
        FileNotFoundError: the directory holds no (complete) dataset.
    """
    manifest = Path(path) / MANIFEST
    if not manifest.exists():
        raise FileNotFoundError(f"{path} holds no complete dataset (no {MANIFEST}); run data_prep first")
    return json.loads(manifest.read_text())

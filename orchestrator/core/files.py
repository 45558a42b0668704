"""Files written so that a crash never leaves a torn one, and the small path rules every layer shares."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")
"""What makes a Hugging Face fast tokenizer directory (the chat template file when the tokenizer has one)."""


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` so that readers see either the old or the new content, never a torn file.

    The temporary file is fsynced before the rename, so a machine crash cannot leave an empty file
    under the final name either.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def is_remote_uri(path: str) -> bool:
    """True for URIs we cannot check locally (MLflow model URIs, object stores)."""
    return "://" in path or path.startswith(("models:/", "runs:/"))


def has_tokenizer(path: str | Path | None) -> bool:
    """Whether ``path`` is a directory holding a fast tokenizer."""
    return path is not None and (Path(path) / "tokenizer.json").is_file()


def copy_tokenizer(src: str | Path, dst: str | Path) -> None:
    """Copy the tokenizer files of ``src`` (a tokenizer or a model directory) into ``dst`` (created)."""
    Path(dst).mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        f = Path(src) / name
        if f.is_file():
            shutil.copy2(f, Path(dst) / name)


def build_once(target: str | Path, build: Callable[[Path], None], done_marker: str = "manifest.json") -> Path:
    """``target`` built by ``build(tmp_dir)`` in a temporary sibling and renamed into place, unless it
    already holds ``done_marker``: concurrent callers never see half of it, and the first to finish wins
    (the others' identical builds are dropped)."""
    target = Path(target)
    if (target / done_marker).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
    try:
        build(tmp)
        try:
            os.rename(tmp, target)
        except OSError:  # another process finished first; theirs is identical
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target

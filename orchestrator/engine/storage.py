"""Committed checkpoints on an object store: ``cluster.storage_path`` as a URI (``s3://``, ``gs://``,
``abfs://``, ``hdfs://``, ``file://``), read and written through pyarrow's filesystems.

Why: a multi-node cluster without a shared filesystem still needs checkpoints that outlive the node that
wrote them. The ranks keep writing DeepSpeed's files to a node-local mirror (``<output_dir>/checkpoints``
on each node's own disk: DeepSpeed and the commit protocol of :mod:`orchestrator.engine.checkpoint` need a
local directory), and the store holds the durable copy with the same layout::

    <uri>/step_00000004/...        every rank's shards, uploaded by one rank per node
    <uri>/step_00000004/COMMITTED  written by rank 0 after every node's upload finished
    <uri>/latest                   moved after COMMITTED

So the commit marker is last on the store too: a checkpoint without it (a node died while uploading) is
never resumed from. Resume and recovery download the chosen committed checkpoint into each node's mirror
before DeepSpeed loads it (:func:`orchestrator.training.loop.select_resume`); the driver downloads the
newest one to decide where a new job starts.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Optional

from orchestrator.core.files import atomic_write_text
from orchestrator.engine.checkpoint import COMMIT_MARKER, LATEST, is_committed

def is_uri(path: Optional[str]) -> bool:
    return path is not None and "://" in str(path)


class RemoteCheckpoints:
    """The committed checkpoints of one run on a pyarrow filesystem (``uri`` = ``<storage_path>/<run>/checkpoints``)."""

    def __init__(self, uri: str) -> None:
        from pyarrow import fs

        self.uri = uri.rstrip("/")
        self.fs, base = fs.FileSystem.from_uri(self.uri)
        self.base = base.rstrip("/")

    def _path(self, *parts: str) -> str:
        return "/".join([self.base, *parts])

    def _kind(self, path: str) -> Any:
        return self.fs.get_file_info(path).type

    def is_committed(self, tag: str) -> bool:
        from pyarrow.fs import FileType

        return self._kind(self._path(tag, COMMIT_MARKER)) == FileType.File

    def committed(self) -> list[str]:
        """Committed tags, oldest first."""
        from pyarrow.fs import FileSelector, FileType

        try:
            infos = self.fs.get_file_info(FileSelector(self.base, allow_not_found=True))
        except FileNotFoundError:
            return []
        tags = sorted(i.base_name for i in infos if i.type == FileType.Directory and i.base_name.startswith("step_"))
        return [t for t in tags if self.is_committed(t)]

    def latest(self) -> Optional[str]:
        """The tag ``latest`` names if it is committed, else the newest committed tag, else None."""
        from pyarrow.fs import FileType

        pointer = self._path(LATEST)
        if self._kind(pointer) == FileType.File:
            with self.fs.open_input_stream(pointer) as f:
                tag = f.read().decode().strip()
            if tag and self.is_committed(tag):
                return tag
        tags = self.committed()
        return tags[-1] if tags else None

    def _write(self, path: str, text: str) -> None:
        with self.fs.open_output_stream(path) as f:
            f.write(text.encode())

    def upload(self, local_dir: Path) -> None:
        """Copy a checkpoint directory's files (written on this node) to ``<uri>/<tag>/``; the commit
        marker is never copied (rank 0 writes it with :meth:`commit` once every node uploaded)."""
        from pyarrow.fs import LocalFileSystem

        local = LocalFileSystem()
        for f in sorted(p for p in Path(local_dir).rglob("*") if p.is_file() and p.name != COMMIT_MARKER):
            dst = self._path(local_dir.name, *f.relative_to(local_dir).parts)
            self.fs.create_dir(dst.rsplit("/", 1)[0], recursive=True)
            with local.open_input_stream(str(f)) as src, self.fs.open_output_stream(dst) as out:
                shutil.copyfileobj(src, out, 8 << 20)

    def commit(self, tag: str) -> None:
        """The marker, then ``latest`` (a reader never finds ``latest`` on an uncommitted checkpoint)."""
        self._write(self._path(tag, COMMIT_MARKER), "ok\n")
        self._write(self._path(LATEST), tag)

    def prune(self, keep: int, current: str) -> None:
        """Delete committed checkpoints beyond the newest ``keep`` and uncommitted leftovers."""
        from pyarrow.fs import FileSelector, FileType

        tags = self.committed()
        doomed = set(tags[: max(0, len(tags) - keep)])
        infos = self.fs.get_file_info(FileSelector(self.base, allow_not_found=True))
        doomed |= {i.base_name for i in infos if i.type == FileType.Directory and i.base_name.startswith("step_")
                   and i.base_name not in tags and i.base_name != current}
        for tag in doomed:
            try:
                self.fs.delete_dir(self._path(tag))
            except OSError:
                pass

    def download(self, tag: str, local_root: Path) -> Path:
        """``<uri>/<tag>`` into ``<local_root>/<tag>`` (kept when already there and committed); the copy
        lands in a temporary sibling first, so a half-downloaded directory is never taken for a checkpoint."""
        from pyarrow.fs import LocalFileSystem, copy_files

        dst = Path(local_root) / tag
        if is_committed(dst):
            return dst
        if not self.is_committed(tag):
            raise FileNotFoundError(f"{self.uri}/{tag} is not a committed checkpoint (no {COMMIT_MARKER} marker)")
        tmp = Path(local_root) / f".{tag}.download-{uuid.uuid4().hex[:8]}"
        tmp.parent.mkdir(parents=True, exist_ok=True)
        copy_files(self._path(tag), str(tmp), source_filesystem=self.fs, destination_filesystem=LocalFileSystem())
        shutil.rmtree(dst, ignore_errors=True)  # an uncommitted leftover of this tag
        try:
            os.replace(tmp, dst)
        except OSError:  # another process on this disk put it there first
            shutil.rmtree(tmp, ignore_errors=True)
            if not is_committed(dst):
                raise
        return dst

    def download_latest(self, local_root: Path) -> Optional[Path]:
        """The newest committed checkpoint into ``local_root`` (``latest`` there names it); None if the store
        has none."""
        tag = self.latest()
        if tag is None:
            return None
        path = self.download(tag, local_root)
        atomic_write_text(Path(local_root) / LATEST, tag)
        return path

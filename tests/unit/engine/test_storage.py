"""The object-store copy of committed checkpoints (:mod:`orchestrator.engine.storage`) on a ``file://`` URI
(pyarrow's LocalFileSystem through ``FileSystem.from_uri``: the same code path as ``s3://``, no network)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.engine.checkpoint import COMMIT_MARKER, is_committed
from orchestrator.engine.storage import RemoteCheckpoints


def _tag(root: Path, tag: str, payload: str) -> Path:
    d = root / tag
    (d / "rng").mkdir(parents=True)
    (d / "mp_rank_00_model_states.pt").write_text(payload)
    (d / "rng" / "rank_0.json").write_text("{}")
    (d / COMMIT_MARKER).write_text("ok\n")  # a local commit marker is never uploaded
    return d


def test_upload_commit_latest_download_and_prune(tmp_path):
    store = RemoteCheckpoints((tmp_path / "bucket" / "run" / "checkpoints").as_uri())
    local = tmp_path / "node_a"
    assert store.latest() is None and store.committed() == []

    store.upload(_tag(local, "step_00000002", "two"))
    assert store.latest() is None  # uploaded but not committed: never resumed from
    bucket = tmp_path / "bucket" / "run" / "checkpoints"
    assert not (bucket / "step_00000002" / COMMIT_MARKER).exists()
    store.commit("step_00000002")
    store.upload(_tag(local, "step_00000004", "four"))
    store.commit("step_00000004")
    store.upload(_tag(local, "step_00000006", "six"))  # a node died before the commit
    assert store.committed() == ["step_00000002", "step_00000004"]
    assert store.latest() == "step_00000004"
    assert (bucket / "latest").read_text() == "step_00000004"

    other = tmp_path / "node_b"  # another node's empty mirror
    got = store.download_latest(other)
    assert got == other / "step_00000004" and is_committed(got)
    assert (got / "mp_rank_00_model_states.pt").read_text() == "four"
    assert (got / "rng" / "rank_0.json").is_file() and (other / "latest").read_text() == "step_00000004"
    assert not list(other.glob(".*download*"))
    with pytest.raises(FileNotFoundError, match="not a committed checkpoint"):
        store.download("step_00000006", other)

    store.prune(keep=1, current="step_00000004")
    assert sorted(p.name for p in bucket.iterdir()) == ["latest", "step_00000004"]

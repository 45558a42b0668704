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


def test_restart_picks_the_stores_newest_commit_and_fetch_downloads_it(tmp_path):
    """A restarted group (the attempt's marker exists) resumes from the store's newest committed step, not
    from what this node's mirror happens to hold; the driver's choice, named by its URI, maps to the mirror."""
    from orchestrator.engine.checkpoint import CheckpointManager
    from orchestrator.training.loop import select_resume

    uri = (tmp_path / "bucket" / "r" / "checkpoints").as_uri()
    store = RemoteCheckpoints(uri)
    for step in (2, 4):
        store.upload(_tag(tmp_path / "writer", f"step_{step:08d}", str(step)))
        store.commit(f"step_{step:08d}")
    mirror = tmp_path / "mirror"
    _tag(mirror, "step_00000002", "2")  # this node's mirror is behind the store
    (mirror / ".started_a1").write_text("started\n")
    ckpts = CheckpointManager(mirror, keep=2, rank=0, world_size=1, remote=uri)

    chosen = select_resume(f"{uri}/step_00000002", mirror, "a1", 0, ckpts.remote)
    assert chosen == str(mirror / "step_00000004")
    assert ckpts.fetch(chosen) == chosen and (mirror / "step_00000004" / "mp_rank_00_model_states.pt").read_text() == "4"

    first = select_resume(f"{uri}/step_00000002", mirror, "a2", 0, ckpts.remote)  # a first start: the driver's choice
    assert first == f"{uri}/step_00000002" and ckpts.fetch(first) == str(mirror / "step_00000002")

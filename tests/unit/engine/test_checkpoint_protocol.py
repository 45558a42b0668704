"""Commit protocol of CheckpointManager with a stand-in engine (the real DeepSpeed path is covered in
tests/integration/test_pretrain_checkpoint.py): markers, latest pointer, pruning, crash leftovers,
RNG capture, and resume decisions."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from orchestrator.config import ConfigError
from orchestrator.kinds import load
from orchestrator.engine import checkpoint as ck
from orchestrator.engine.resume import check_compatible, resolve_resume, shape_fingerprint


class FileEngine:
    """Writes one file per save like DeepSpeed's save_checkpoint(save_dir, tag)."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def save_checkpoint(self, save_dir: str, tag: str, save_latest: bool = True) -> None:
        d = Path(save_dir) / tag
        d.mkdir(parents=True, exist_ok=True)
        (d / "mp_rank_00_model_states.pt").write_text("weights")
        if self.fail:
            raise RuntimeError("disk full")


def test_save_commits_moves_latest_and_prunes(tmp_path):
    m = ck.CheckpointManager(tmp_path, keep=2, rank=0, world_size=1)
    for step in (2, 4, 6):
        m.save(FileEngine(), ck.step_tag(step), {"step": step})
    assert [p.name for p in ck.committed_tags(tmp_path)] == ["step_00000004", "step_00000006"]
    assert (tmp_path / "latest").read_text() == "step_00000006"
    assert ck.read_trainer_state(tmp_path / "step_00000006")["step"] == 6
    assert (tmp_path / "step_00000006" / "rng" / "rank_0.json").exists()


def test_crash_while_writing_keeps_previous_latest(tmp_path):
    m = ck.CheckpointManager(tmp_path, keep=2, rank=0, world_size=1)
    m.save(FileEngine(), "step_00000002", {"step": 2})
    with pytest.raises(RuntimeError):
        m.save(FileEngine(fail=True), "step_00000004", {"step": 4})
    assert (tmp_path / "step_00000004").exists() and not ck.is_committed(tmp_path / "step_00000004")
    assert ck.latest_committed(tmp_path).name == "step_00000002"
    # even a pointer to an uncommitted tag (written by a foreign tool) is not trusted
    (tmp_path / "latest").write_text("step_00000004")
    assert ck.latest_committed(tmp_path).name == "step_00000002"
    m.save(FileEngine(), "step_00000004", {"step": 4})  # the retry replaces the leftover
    assert ck.latest_committed(tmp_path).name == "step_00000004"


def test_rng_roundtrip():
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    state = json.loads(json.dumps(ck.capture_rng()))
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    ck.restore_rng(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a


def _fake_checkpoint(root: Path, step: int, shape: dict, schedule: dict | None = None) -> Path:
    d = root / ck.step_tag(step)
    d.mkdir(parents=True)
    (d / ck.STATE_FILE).write_text(json.dumps({"step": step, "extra": {"shape": shape, "schedule": schedule or {}}}))
    (d / ck.COMMIT_MARKER).write_text("ok")
    (root / "latest").write_text(d.name)
    return d


def test_resume_auto_never_and_path(tmp_path):
    cfg = load("pretrain", [f"workspace={tmp_path}", "parallel=zero2"])
    root = tmp_path / "ckpts"
    assert resolve_resume(cfg, root) is None
    d = _fake_checkpoint(root, 4, shape_fingerprint(cfg))
    assert resolve_resume(cfg, root) == d
    with pytest.raises(ConfigError) as err:
        resolve_resume(load("pretrain", [f"workspace={tmp_path}", "parallel=zero2", "resume=never"]), root)
    assert err.value.key == "resume"
    assert resolve_resume(load("pretrain", [f"workspace={tmp_path}", "parallel=zero2", f"resume={root}"]), root) == d


def test_shape_change_is_refused_by_key_unless_allowed(tmp_path):
    saved = shape_fingerprint(load("pretrain", ["parallel=zero2"]))
    with pytest.raises(ConfigError) as err:
        check_compatible(saved, load("pretrain", ["parallel=zero2", "model.num_layers=3"]))
    assert err.value.key == "model.num_layers" and "allow_config_change" in err.value.fix
    with pytest.raises(ConfigError) as err:
        check_compatible(saved, load("pretrain", ["parallel=zero2", "cluster.num_workers=4"]))
    assert err.value.key == "cluster.num_workers"
    check_compatible(saved, load("pretrain", ["parallel=zero2", "model.num_layers=3", "trainer.allow_config_change=true"]))
    check_compatible(saved, load("pretrain", ["parallel=zero2", "trainer.lr=1e-4", "trainer.max_steps=99"]))


def test_zero0_checkpoints_survive_a_world_size_change():
    saved = shape_fingerprint(load("pretrain", ["parallel=zero0"]))
    check_compatible(saved, load("pretrain", ["parallel=zero0", "cluster.num_workers=4"]))


def test_changed_schedule_on_resume_warns_with_both_lrs_or_is_refused(tmp_path, capsys):
    from orchestrator.engine.resume import check_schedule, schedule_fingerprint

    base = [f"workspace={tmp_path}", "parallel=zero2", "optim.warmup_steps=0", "trainer.lr=0.001",
            "optim.min_lr_ratio=0.0", "optim.schedule=cosine"]
    saved = schedule_fingerprint(load("pretrain", [*base, "trainer.max_steps=4"]))
    assert check_schedule(saved, load("pretrain", [*base, "trainer.max_steps=4"]), 4) is None
    text = check_schedule(saved, load("pretrain", [*base, "trainer.max_steps=8"]), 4)
    # cosine over 4 steps ends at 0 at step 4; over 8 steps step 5 is at 0.5*(1+cos(4*pi/7)) of the peak
    assert "trainer.max_steps 4 -> 8" in text and "step 5 trains at lr=0.000389" in text
    assert "step 4 ran at lr=0 " in text and "would have used lr=0.000611" in text
    assert capsys.readouterr().out.count("warning: resuming after step 4") == 1
    with pytest.raises(ConfigError) as err:
        check_schedule(saved, load("pretrain", [*base, "trainer.max_steps=8", "trainer.strict_schedule=true"]), 4)
    assert err.value.key == "trainer.max_steps"


def test_resolve_resume_checks_the_stored_schedule(tmp_path, capsys):
    from orchestrator.engine.resume import schedule_fingerprint

    cfg4 = load("pretrain", [f"workspace={tmp_path}", "parallel=zero2", "trainer.max_steps=4"])
    root = tmp_path / "ckpts"
    d = _fake_checkpoint(root, 4, shape_fingerprint(cfg4), schedule=schedule_fingerprint(cfg4))
    assert resolve_resume(load("pretrain", [f"workspace={tmp_path}", "parallel=zero2", "trainer.max_steps=8"]), root) == d
    assert "changed LR schedule (trainer.max_steps 4 -> 8)" in capsys.readouterr().out

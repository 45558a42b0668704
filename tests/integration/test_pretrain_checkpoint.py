"""A crash while a real DeepSpeed checkpoint is being written leaves the previous one loadable and
exact (single process, gloo world of one, ZeRO-3 so that parameters are partitioned)."""

from __future__ import annotations

import os
import socket

import pytest
import torch

from orchestrator.kinds import load
from orchestrator.config.plan import make_train_plan
from orchestrator.engine import checkpoint as ck

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dist_world_of_one():
    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    dist.init_process_group("gloo", rank=0, world_size=1)
    yield
    dist.destroy_process_group()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _engine(cfg):
    from orchestrator.engine.initialize import init_engine
    from orchestrator.models.build import build_causal_lm

    return init_engine(build_causal_lm(cfg.model, cfg.trainer.seed), cfg, make_train_plan(cfg))


def _step(engine, k: int) -> float:
    g = torch.Generator().manual_seed(k)
    x = torch.randint(0, 512, (1, 64), generator=g)
    loss = engine(input_ids=x, labels=x).loss
    engine.backward(loss)
    engine.step()
    return loss.item()


def test_crash_mid_write_leaves_previous_checkpoint_loadable(tmp_path, monkeypatch, dist_world_of_one):
    cfg = load("pretrain", [f"workspace={tmp_path}", "parallel=zero3", "cluster.num_workers=1",
                            "trainer.global_batch_size=1", "trainer.max_steps=6"])
    root = tmp_path / "checkpoints"
    m = ck.CheckpointManager(root, keep=2, rank=0, world_size=1)
    engine = _engine(cfg)
    [_step(engine, k) for k in (1, 2)]
    m.save(engine, ck.step_tag(2), {"step": 2})
    expected = [_step(engine, k) for k in (3, 4)]

    real_write = ck.atomic_write_text

    def crash_on_commit(path, text):
        if path.name == ck.COMMIT_MARKER:
            raise SystemExit("killed while writing the checkpoint")  # every shard is on disk, no marker
        real_write(path, text)

    monkeypatch.setattr(ck, "atomic_write_text", crash_on_commit)
    with pytest.raises(SystemExit):
        m.save(engine, ck.step_tag(4), {"step": 4})
    monkeypatch.setattr(ck, "atomic_write_text", real_write)

    assert any((root / "step_00000004").iterdir())  # DeepSpeed's files of the torn checkpoint exist
    assert ck.latest_committed(root).name == "step_00000002"
    fresh = _engine(cfg)
    state = m.load(fresh, ck.latest_committed(root))
    assert state["step"] == 2
    assert [_step(fresh, k) for k in (3, 4)] == expected  # bit-exact continuation from step 2
    with pytest.raises(FileNotFoundError):
        m.load(_engine(cfg), root / "step_00000004")  # the torn one is never loaded

"""Which checkpoint a job resumes from, and whether it may (driver side, before Ray starts).

Public API:
    shape_fingerprint(cfg) -> dict[str, Any]
    resolve_resume(cfg, checkpoint_root) -> Optional[Path]
    check_compatible(saved_shape, cfg) -> None     (ConfigError naming the key unless allowed)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

from orchestrator.config.errors import ConfigError
from orchestrator.config.jobs import TrainJobConfig
from orchestrator.engine.checkpoint import committed_tags, is_committed, latest_committed, read_trainer_state

log = logging.getLogger(__name__)

_MODEL_SHAPE = ("arch", "hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size",
                "vocab_size", "tie_embeddings")


def shape_fingerprint(cfg: TrainJobConfig) -> dict[str, Any]:
    """Config values a checkpoint cannot survive changing: the model's shape, and (ZeRO >= 1, where
    optimizer/parameter shards are per rank) the world size and the parallel layout."""
    shape: dict[str, Any] = {f"model.{k}": getattr(cfg.model, k) for k in _MODEL_SHAPE}
    shape["parallel.tensor_parallel"] = cfg.parallel.tensor_parallel
    shape["parallel.pipeline_parallel"] = cfg.parallel.pipeline_parallel
    shape["parallel.zero_stage"] = cfg.parallel.zero_stage
    if cfg.parallel.zero_stage >= 1:
        shape["cluster.num_workers"] = cfg.cluster.num_workers
    return shape


def check_compatible(saved_shape: dict[str, Any], cfg: TrainJobConfig, where: str = "the checkpoint") -> None:
    """Refuse to resume when a shape-breaking key differs, unless ``trainer.allow_config_change``.

    Raises:
        ConfigError: naming the first differing key, the saved and the new value.
    """
    now = shape_fingerprint(cfg)
    for key in sorted(set(saved_shape) | set(now)):
        if key == "cluster.num_workers" and cfg.parallel.zero_stage == 0:
            continue  # ZeRO-0 checkpoints hold full states: any world size loads them
        old, new = saved_shape.get(key), now.get(key)
        if old == new:
            continue
        if cfg.trainer.allow_config_change:
            log.warning("resuming although %s changed from %r to %r (trainer.allow_config_change=true)", key, old, new)
            continue
        raise ConfigError(key, f"{new!r} differs from {old!r} in {where}, which cannot be resumed with it",
                          f"set {key}={old!r}, start a new run (resume=never or another run_name), or force it "
                          "with trainer.allow_config_change=true")


def resolve_resume(cfg: TrainJobConfig, checkpoint_root: Path) -> Optional[Path]:
    """The committed checkpoint to start from (None = from scratch), checked against ``cfg``.

    ``resume=auto``: the newest committed checkpoint of this run, if any. ``never``: from scratch,
    refusing a run directory that already holds checkpoints. A path: that committed checkpoint, or the
    newest committed one under a checkpoints directory.
    """
    if cfg.resume == "never":
        if committed_tags(checkpoint_root):
            raise ConfigError("resume", f"{checkpoint_root} already holds checkpoints and resume=never would "
                              "overwrite them", "use resume=auto to continue, or another run_name")
        return None
    if cfg.resume == "auto":
        ckpt = latest_committed(checkpoint_root)
    else:
        path = Path(cfg.resume).expanduser().resolve()
        ckpt = path if is_committed(path) else latest_committed(path)
        if ckpt is None:
            raise ConfigError("resume", f"{cfg.resume!r} holds no committed checkpoint",
                              "point resume= at a checkpoint directory with a COMMITTED marker, or use resume=auto")
    if ckpt is not None:
        state = read_trainer_state(ckpt)
        check_compatible(state.get("extra", {}).get("shape", {}), cfg, where=str(ckpt))
    return ckpt

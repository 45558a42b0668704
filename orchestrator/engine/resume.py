"""Which checkpoint a job resumes from, and whether it may (driver side, before Ray starts).

Public API:
    shape_fingerprint(cfg) -> dict[str, Any]
    resolve_resume(cfg, checkpoint_root) -> Optional[Path]
    check_compatible(saved_shape, cfg) -> None     (ConfigError naming the key unless allowed)
    schedule_fingerprint(cfg) / check_schedule(saved, cfg, step) -> Optional[str]   (warn or refuse)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

from orchestrator.config.errors import ConfigError
from orchestrator.config.jobs import TrainJobConfig
from orchestrator.core.console import say
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


_SCHEDULE = ("trainer.max_steps", "trainer.lr", "optim.schedule", "optim.warmup_steps", "optim.min_lr_ratio")


def schedule_fingerprint(cfg: TrainJobConfig) -> dict[str, Any]:
    """The values that decide the LR of every step (stored in each checkpoint)."""
    t, o = cfg.trainer, cfg.optim
    return dict(zip(_SCHEDULE, (t.max_steps, t.lr, o.schedule, o.warmup_steps, o.min_lr_ratio)))


def _lr_at(fp: dict[str, Any], step: int) -> float:
    from orchestrator.engine.optim import lr_factor

    return fp["trainer.lr"] * lr_factor(step, warmup_steps=fp["optim.warmup_steps"], max_steps=fp["trainer.max_steps"],
                                        schedule=fp["optim.schedule"], min_lr_ratio=fp["optim.min_lr_ratio"])


def check_schedule(saved: dict[str, Any], cfg: TrainJobConfig, step: int) -> Optional[str]:
    """Compare the checkpoint's schedule with ``cfg``'s before resuming after ``step`` optimizer steps.

    Returns:
        The warning printed (None when the schedule is unchanged or the checkpoint predates the record).
    Raises:
        ConfigError: the schedule changed and ``trainer.strict_schedule`` is set.
    """
    now = schedule_fingerprint(cfg)
    changed = [k for k in _SCHEDULE if k in saved and saved[k] != now[k]]
    if not changed or set(saved) != set(now):
        return None
    what = ", ".join(f"{k} {saved[k]!r} -> {now[k]!r}" for k in changed)
    last = max(step - 1, 0)
    text = (f"resuming after step {step} with a changed LR schedule ({what}): step {step + 1} trains at "
            f"lr={_lr_at(now, step):.3g}, while step {step} ran at lr={_lr_at(saved, last):.3g} where an "
            f"uninterrupted run with the new settings would have used lr={_lr_at(now, last):.3g}; "
            "results will differ from such a run")
    if cfg.trainer.strict_schedule:
        raise ConfigError(changed[0], text, f"set {changed[0]}={saved[changed[0]]!r}, or trainer.strict_schedule=false")
    log.warning("%s", text)
    say(f"warning: {text}")
    return text


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
        check_schedule(state.get("extra", {}).get("schedule", {}), cfg, int(state["step"]))
    return ckpt

"""Compose a job's config with Hydra and turn it into a frozen, validated dataclass tree."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig, OmegaConf

from orchestrator.config.errors import ConfigError
from orchestrator.config.jobs import JobConfig


def conf_dir() -> Path:
    """The ``conf/`` directory (``ORCHESTRATOR_CONF_DIR`` overrides the repository's own)."""
    env = os.environ.get("ORCHESTRATOR_CONF_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "conf"


def compose(kind: str, overrides: Sequence[str] = ()) -> DictConfig:
    """Compose ``conf/<kind>.yaml`` with Hydra overrides, without starting anything. The kind's schema
    must be registered (``orchestrator.kinds.load`` does both; it is the public way to load a config).

    Raises:
        ConfigError: unknown key, wrong type or bad preset name.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            return hydra_compose(config_name=kind, overrides=list(overrides))
    except Exception as exc:  # Hydra/OmegaConf raise many types; all are user errors here
        raise hydra_error_to_config_error(exc) from exc
    finally:
        GlobalHydra.instance().clear()


def to_typed(cfg: DictConfig) -> JobConfig:
    """Resolve interpolations, build the dataclass tree (running ``__post_init__`` checks), fill
    derived defaults and freeze it."""
    try:
        obj = OmegaConf.to_object(cfg)
    except ConfigError:
        raise
    except Exception as exc:
        inner = exc.__cause__ or exc.__context__
        if isinstance(inner, ConfigError):
            raise inner from None
        raise hydra_error_to_config_error(exc) from exc
    assert isinstance(obj, JobConfig), type(obj)
    obj = _fill_derived(obj)
    obj.freeze()
    return obj


def _fill_derived(cfg: JobConfig) -> JobConfig:
    """Absolute paths and the default tracking URI, so the resolved config is self-contained."""
    import dataclasses

    workspace = str(Path(cfg.workspace).expanduser().resolve())
    output_dir = str(Path(cfg.output_dir).expanduser().resolve())
    tracking = cfg.tracking
    if tracking.uri is None:
        tracking = dataclasses.replace(tracking, uri=f"sqlite:///{workspace}/mlflow.db")
    return dataclasses.replace(cfg, workspace=workspace, output_dir=output_dir, tracking=tracking)


def hydra_error_to_config_error(exc: BaseException) -> ConfigError:
    """Turn a Hydra/OmegaConf exception into a one-line :class:`ConfigError` naming the key."""
    if isinstance(exc, ConfigError):
        return exc
    texts = []
    e: Any = exc
    while e is not None:
        texts.append(str(e))
        e = e.__cause__ or e.__context__
    text = "\n".join(texts)
    full_key = re.search(r"full_key: ([\w.\[\]]+)", text)
    missing_preset = re.search(r"Could not find '([^']+)/([^'/]+)'", text)
    if missing_preset:
        group, name = missing_preset.groups()
        opts = re.search(r"Available options in '[^']+':\n((?:\t\S+\n?)+)", text)
        avail = ", ".join(opts.group(1).split()) if opts else f"the files in conf/{group}/"
        return ConfigError(group, f"unknown preset {name!r}", f"use one of {avail}")
    unknown = re.search(r"Key '([^']+)' not in '([^']+)'", text)
    if unknown:
        key = full_key.group(1) if full_key else unknown.group(1)
        return ConfigError(key, f"unknown key {unknown.group(1)!r} (not a field of {unknown.group(2)})",
                           "check the spelling; `dry_run=true` prints every valid key")
    bad_type = re.search(r"Value '([^']*)' of type '[^']+' could not be converted to (\w+)", text)
    if bad_type:
        key = full_key.group(1) if full_key else "config"
        return ConfigError(key, f"{bad_type.group(1)!r} is not a valid {bad_type.group(2)}",
                           f"give a {bad_type.group(2)} value")
    key = full_key.group(1) if full_key else "config"
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(exc).__name__)
    return ConfigError(key, first, "see the schema in orchestrator/config/ (dry_run=true prints the config)")

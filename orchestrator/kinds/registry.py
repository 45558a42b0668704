"""The job-kind registry: every kind is one module in this package that declares a :class:`KindSpec`.

A spec says everything the rest of the product needs to know about a kind: its primary config class
(the schema behind ``conf/<name>.yaml``), its own checks (run before Ray for ``run``, ``submit`` and
every pipeline stage), its dry-run plan, its runner, the outputs the pipeline wires downstream, the
inputs it takes from upstream stages, its key metric and the parallelism it supports. Entry points,
the CLI, config loading, the pipeline and the summary read the registry; no other table of kinds exists.

Adding a kind: one module here defining ``SPEC``, one ``conf/<name>.yaml`` (whose defaults start with
``<name>_schema``) and one ``jobs/<name>.py``.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

from orchestrator.config.errors import ConfigError


def _no_checks(cfg: Any) -> None:
    return None


def _no_outputs(result: Mapping[str, Any], output_dir: str) -> dict[str, str]:
    return {}


def model_output(result: Mapping[str, Any], output_dir: str) -> dict[str, str]:
    """The ``model`` output of a training kind: its Hugging Face export directory, when it wrote one."""
    export = result.get("export_dir")
    return {"model": str(export)} if export else {}


@dataclass(frozen=True)
class KindSpec:
    """What one job kind declares (see the module docstring)."""

    name: str
    """The one name: module, ``jobs/`` file, ``conf/`` primary config and the ``job_kind`` MLflow tag."""
    config: type
    """Primary config dataclass (registered in Hydra's ConfigStore as ``<name>_schema``)."""
    run: Callable[[Any], Mapping[str, Any]]
    """Runs a validated, frozen config; returns at least ``run_id`` and ``output_dir``."""
    summary: str
    """One line for ``orchestrator --help``."""
    check: Callable[[Any], None] = _no_checks
    """The kind's own checks (raise ConfigError); imports neither torch nor Ray."""
    plan: Optional[Callable[[Any], dict[str, Any]]] = None
    """Dry-run plan (pure arithmetic); None means the generic training plan or nothing."""
    outputs: Callable[[Mapping[str, Any], str], dict[str, str]] = _no_outputs
    """Named outputs of a finished run (``dataset``, ``model``) for downstream pipeline stages."""
    data_format: Optional[str] = None
    """Dataset format read from ``data.path`` (wired from an upstream data_prep of that format)."""
    model_inputs: Mapping[str, str] = field(default_factory=dict)
    """Config key filled with an upstream stage's ``model`` output, by upstream kind (``*``: any kind)."""
    key_metrics: tuple[str, ...] = ()
    """Summary metric: the first of these present in the result (or its ``eval``/``metrics``)."""
    worker_group: bool = False
    """Trains on one worker group (:mod:`orchestrator.runtime.worker_group`): the generic training plan and its batch arithmetic apply."""
    tensor_parallel: bool = False
    """Supports ``parallel.tensor_parallel > 1`` (DeepSpeed AutoTP)."""
    pipeline_parallel: bool = False
    """Supports ``parallel.pipeline_parallel > 1`` (DeepSpeed PipelineModule)."""
    pipeline_stage: bool = True
    """Can be a stage of a ``pipeline`` job."""

    def model_input_key(self, upstream_kind: str) -> Optional[str]:
        return self.model_inputs.get(upstream_kind, self.model_inputs.get("*"))


_SPECS: dict[str, KindSpec] = {}


def _discover() -> dict[str, KindSpec]:
    """Import every kind module of this package once (each defines ``SPEC``)."""
    if not _SPECS:
        import orchestrator.kinds as package

        from orchestrator.config.store import register_schema

        for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
            if info.name.startswith("_") or info.name == "registry":
                continue
            spec = importlib.import_module(f"{package.__name__}.{info.name}").SPEC
            assert spec.name == info.name, f"kind module {info.name} declares {spec.name!r}"
            register_schema(f"{spec.name}_schema", spec.config)
            _SPECS[spec.name] = spec
    return _SPECS


def names() -> tuple[str, ...]:
    """Every job kind, sorted by name."""
    return tuple(_discover())


def get(kind: str) -> KindSpec:
    """The spec of ``kind``.

    Raises:
        ConfigError: unknown kind.
    """
    specs = _discover()
    if kind not in specs:
        raise ConfigError("kind", f"unknown job kind {kind!r}", f"use one of {', '.join(specs)}")
    return specs[kind]

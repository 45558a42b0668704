"""Job kinds: one module per kind declaring its :class:`~orchestrator.kinds.registry.KindSpec`.

Public API (imports neither torch nor Ray):
    names() / get(kind)          the registry
    load(kind, overrides)        compose, type, validate (generic + the kind's checks) and freeze a config
    validate(cfg)                the checks of an already typed config (generic + the kind's own)
    plan(cfg)                    the dry-run plan
    run(cfg)                     run a validated config (imports the heavy stack then)
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from orchestrator.config.errors import ConfigError
from orchestrator.config.load import compose, to_typed
from orchestrator.config.jobs import checkpoint_root, checkpoint_uri
from orchestrator.config.plan import make_train_plan
from orchestrator.config.validate import check_elastic, check_train_batch, validate_common
from orchestrator.kinds.registry import KindSpec, get, names

__all__ = ["KindSpec", "get", "names", "load", "validate", "plan", "run"]


def validate(cfg: Any) -> None:
    """Generic cross-group checks, the parallelism the kind supports, then the kind's own checks.

    Raises:
        ConfigError: naming the key at fault and the fix.
    """
    spec = get(cfg.kind)
    validate_common(cfg)
    p = getattr(cfg, "parallel", None)
    if p is not None:
        for key, value, ok in (("parallel.tensor_parallel", p.tensor_parallel, spec.tensor_parallel),
                               ("parallel.pipeline_parallel", p.pipeline_parallel, spec.pipeline_parallel)):
            if value > 1 and not ok:
                raise ConfigError(key, f"{value} is not supported by {spec.name} (ZeRO data parallelism only)",
                                  f"set {key}=1 and use parallel.zero_stage=0..3 to scale")
    if spec.worker_group:
        check_train_batch(cfg)
    if p is not None:
        check_elastic(cfg, spec.worker_group)
    spec.check(cfg)


def load(kind: str, overrides: Sequence[str] = ()) -> Any:
    """Compose ``conf/<kind>.yaml`` with Hydra overrides, build the typed config, validate and freeze it.
    Starts no process.

    Raises:
        ConfigError: unknown kind, key, type or preset, or any failed check (naming the key and the fix).
    """
    get(kind)  # unknown kinds fail here, and the schemas are registered
    cfg = to_typed(compose(kind, overrides))
    validate(cfg)
    return cfg


def plan(cfg: Any) -> dict[str, Any]:
    """The plan printed by ``dry_run=true`` (and logged to MLflow)."""
    spec = get(cfg.kind)
    if spec.plan is not None:
        return spec.plan(cfg)
    if not spec.worker_group:
        return {}
    return {**make_train_plan(cfg).as_dict(), "checkpoints": checkpoint_uri(cfg) or str(checkpoint_root(cfg))}


def run(cfg: Any) -> Mapping[str, Any]:
    """Run a validated, frozen config with its kind's runner."""
    return get(cfg.kind).run(cfg)

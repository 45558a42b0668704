"""One entry for every job kind: typed config in, dry-run plan or a library call out.

Used by ``orchestrator run`` and by the ``jobs/<kind>.py`` Hydra entry points alike.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Sequence

import yaml

from orchestrator.config.base import as_dict
from orchestrator.config.errors import ConfigError
from orchestrator.config.jobs import JobConfig
from orchestrator.config.redact import redact

# kind -> "module:function" taking the frozen typed config; imported lazily so that validation and
# dry runs never import torch, Ray or DeepSpeed. Each returns a dict with at least ``run_id`` and
# ``output_dir``; data_prep adds ``dataset_dir``, training jobs ``export_dir`` and, when registered,
# ``model_version`` (the registry name is the job's ``run_name``).
RUNNERS: dict[str, str] = {
    "data_prep": "orchestrator.data.job:run_data_prep",
    "pretrain": "orchestrator.training.jobs:run_pretrain",
    "sft": "orchestrator.training.posttrain:run_sft",
    "reward_model": "orchestrator.training.posttrain:run_reward_model",
    "dpo": "orchestrator.rlhf.jobs:run_dpo",
    "ppo": "orchestrator.rlhf.jobs:run_ppo",
    "pipeline": "orchestrator.pipeline.runner:run_pipeline",
}

EXIT_CONFIG_ERROR = 2


def resolve_runner(kind: str) -> Callable[[JobConfig], Any]:
    module_name, func_name = RUNNERS[kind].split(":")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, func_name)
    except (ImportError, AttributeError) as exc:
        if module_name.split(".")[-1] in str(exc) or func_name in str(exc):
            raise ConfigError("kind", f"job kind {kind!r} is not implemented in this build",
                              "see the open issues; use a kind that is implemented") from exc
        raise


def config_to_yaml(cfg: JobConfig) -> str:
    """The resolved config as YAML, secrets masked."""
    return yaml.safe_dump(redact(as_dict(cfg)), sort_keys=False)


def dry_run_text(cfg: JobConfig) -> str:
    from orchestrator.config.plan import make_plan

    plan = make_plan(cfg)
    return ("# resolved config\n" + config_to_yaml(cfg) + "\n# plan\n"
            + yaml.safe_dump(plan, sort_keys=False))


def execute(cfg: JobConfig) -> Any:
    """Run a validated, frozen config: print the plan for dry runs, else call the job's library entry."""
    if cfg.dry_run:
        print(dry_run_text(cfg))
        return None
    from orchestrator.quiet import quiet_libraries

    quiet_libraries()
    return resolve_runner(cfg.kind)(cfg)


def fail(exc: ConfigError) -> None:
    """Print one line naming the key and the fix, exit 2 (no traceback)."""
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(EXIT_CONFIG_ERROR)


def run_kind(kind: str, overrides: Sequence[str]) -> int:
    """Compose, validate and run ``kind`` with Hydra overrides; returns the process exit code."""
    from orchestrator.config.load import load

    try:
        cfg = load(kind, overrides)
        execute(cfg)
    except ConfigError as exc:
        fail(exc)
    return 0


def precheck(kind: str, argv: Sequence[str]) -> None:
    """Validate ``jobs/<kind>.py``'s overrides before Hydra's own main runs, so that config mistakes
    exit 2 with one line there too (Hydra would print a block and exit 1). Hydra flags are left to it."""
    if any(a.startswith("-") for a in argv):
        return
    from orchestrator.config.load import load

    try:
        load(kind, argv)
    except ConfigError as exc:
        fail(exc)


def hydra_main(kind: str, dict_cfg: Any) -> None:
    """Body of ``jobs/<kind>.py``'s ``@hydra.main`` function."""
    from orchestrator.config.load import to_typed
    from orchestrator.config.validate import validate

    try:
        cfg = to_typed(dict_cfg)
        assert cfg.kind == kind, (cfg.kind, kind)
        validate(cfg)
        execute(cfg)
    except ConfigError as exc:
        fail(exc)

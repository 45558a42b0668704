"""One entry for every job kind: typed config in, dry-run plan or the kind's runner out.

Used by ``orchestrator run`` and by the ``jobs/<kind>.py`` Hydra entry points alike.
"""

from __future__ import annotations

import sys
from typing import Any, Sequence

import yaml

from orchestrator import kinds
from orchestrator.config.base import as_dict
from orchestrator.config.errors import ConfigError
from orchestrator.config.jobs import JobConfig
from orchestrator.config.load import to_typed
from orchestrator.config.redact import redact

EXIT_CONFIG_ERROR = 2


def config_to_yaml(cfg: JobConfig) -> str:
    """The resolved config as YAML, secrets masked."""
    return yaml.safe_dump(redact(as_dict(cfg)), sort_keys=False)


def dry_run_text(cfg: JobConfig) -> str:
    return ("# resolved config\n" + config_to_yaml(cfg) + "\n# plan\n"
            + yaml.safe_dump(kinds.plan(cfg), sort_keys=False))


def execute(cfg: JobConfig) -> Any:
    """Run a validated, frozen config: print the plan for dry runs, else call the kind's runner."""
    if cfg.dry_run:
        print(dry_run_text(cfg))
        return None
    from pathlib import Path

    from orchestrator.core.console import capture, quiet_libraries

    quiet_libraries()
    with capture(Path(cfg.output_dir) / "logs" / "orchestrator.log", plain_errors=(ConfigError,)):
        return kinds.run(cfg)


def fail(exc: ConfigError) -> None:
    """Print one line naming the key and the fix, exit 2 (no traceback)."""
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(EXIT_CONFIG_ERROR)


def run_kind(kind: str, overrides: Sequence[str]) -> int:
    """Compose, validate and run ``kind`` with Hydra overrides; returns the process exit code."""
    try:
        execute(kinds.load(kind, overrides))
    except ConfigError as exc:
        fail(exc)
    return 0


def precheck(kind: str, argv: Sequence[str]) -> None:
    """Validate ``jobs/<kind>.py``'s overrides before Hydra's own main runs, so that config mistakes
    exit 2 with one line there too (Hydra would print a block and exit 1). Hydra flags are left to it."""
    if any(a.startswith("-") for a in argv):
        return
    try:
        kinds.load(kind, argv)
    except ConfigError as exc:
        fail(exc)


def hydra_main(kind: str, dict_cfg: Any) -> None:
    """Body of ``jobs/<kind>.py``'s ``@hydra.main`` function."""
    try:
        cfg = to_typed(dict_cfg)
        assert cfg.kind == kind, (cfg.kind, kind)
        kinds.validate(cfg)
        execute(cfg)
    except ConfigError as exc:
        fail(exc)
    import gc

    gc.freeze()  # skip the final collection over the job's leftovers at exit (see orchestrator.cli.main)

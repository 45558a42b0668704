"""Concise console output by default: library warnings and INFO chatter off unless asked for.

``ORCHESTRATOR_VERBOSE=1`` restores every library's own logging and warnings.
"""

from __future__ import annotations

import logging
import os
import warnings

NOISY_LOGGERS = ("ray", "ray.train", "ray.data", "deepspeed", "DeepSpeed", "mlflow", "alembic", "transformers",
                 "torch.distributed", "urllib3", "filelock", "datasets", "hydra")

# Inherited by Ray workers (through worker_env) so their output is as quiet as the driver's.
QUIET_ENV = {
    "PYTHONWARNINGS": "ignore::DeprecationWarning,ignore::FutureWarning,ignore::UserWarning",
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "RAY_TRAIN_ENABLE_STATE_TRACKING": "0",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "RAY_DATA_LOG_LEVEL": "WARNING",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
}


# Applied whether verbose or not (they change no output): no telemetry threads or network calls at
# start-up and exit (MLflow's telemetry client fetches a config and joins its threads at exit; the
# machine may be offline).
LEAN_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
}


def verbose() -> bool:
    return os.environ.get("ORCHESTRATOR_VERBOSE", "") not in ("", "0", "false")


def quiet_env() -> dict[str, str]:
    """Environment for worker processes (only :data:`LEAN_ENV` when verbose)."""
    return dict(LEAN_ENV) if verbose() else {**LEAN_ENV, **QUIET_ENV}


def quiet_libraries() -> None:
    """Silence library warnings and INFO logs in this process (only :data:`LEAN_ENV` when verbose)."""
    for key, value in LEAN_ENV.items():
        os.environ.setdefault(key, value)
    if verbose():
        return
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    for category in (DeprecationWarning, FutureWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING if name != "alembic" else logging.ERROR)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("orchestrator").setLevel(logging.INFO)

"""What a new worker process imports before its first job, without the optional imports nothing here uses.

A new host (:mod:`orchestrator.runtime.worker_group`) imports torch, transformers and DeepSpeed as soon as it
starts; on the 2-core reference machine that is ~10 s of CPU per process and most of a cold job's start-up
(issue #13). About 3 s of it are two optional imports that no training or RL code here reaches:

* ``mlflow``: DeepSpeed's autotuner does ``try: import mlflow`` at import time (to log autotuning trials; we
  never autotune). Workers that log (rank 0's sample tables) import mlflow themselves when they first do.
* ``sklearn.metrics``: transformers' ``generation.candidate_generator`` imports ``roc_curve`` whenever
  scikit-learn is installed (it is: mlflow depends on it), for assisted decoding's threshold tuning only.

:func:`import_modules` imports a list of modules with ``mlflow`` hidden (DeepSpeed then takes its own
"mlflow unavailable" branch) and ``sklearn.metrics`` replaced by a stand-in whose ``roc_curve`` imports
the real function on first call; both are restored as soon as the imports finish, so a later ``import mlflow``
or ``import sklearn`` in the process gets the real packages. Measured (CPU seconds of one process importing
the worker preload, 2-core machine under load): ~10.0 -> ~7.2.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import logging
import sys
import types
from typing import Any, Iterator

log = logging.getLogger(__name__)
_MISSING = object()

PRELOAD_ENV = "ORCHESTRATOR_WORKER_PRELOAD"
"""Modules (comma-separated) that :mod:`orchestrator.runtime.worker_preload` imports in new Ray workers."""


def _roc_curve(*args: Any, **kwargs: Any) -> Any:
    """scikit-learn's ``roc_curve``, imported when transformers first calls it."""
    return importlib.import_module("sklearn.metrics").roc_curve(*args, **kwargs)


@contextlib.contextmanager
def without_optional_imports() -> Iterator[None]:
    """Hide ``mlflow`` and stand in for ``sklearn.metrics`` while the body imports (see the module doc).
    Nothing is changed for a package that is already imported."""
    saved = {name: sys.modules.get(name, _MISSING) for name in ("mlflow", "sklearn", "sklearn.metrics")}
    if saved["mlflow"] is _MISSING:
        sys.modules["mlflow"] = None  # type: ignore[assignment]  # ``import mlflow`` raises ImportError
    if saved["sklearn"] is _MISSING:
        sk = types.ModuleType("sklearn")
        sk.__spec__ = importlib.machinery.ModuleSpec("sklearn", None, is_package=True)
        sk.__path__ = []  # type: ignore[attr-defined]
        metrics = types.ModuleType("sklearn.metrics")
        metrics.__spec__ = importlib.machinery.ModuleSpec("sklearn.metrics", None)
        metrics.roc_curve = _roc_curve  # type: ignore[attr-defined]
        sk.metrics = metrics  # type: ignore[attr-defined]
        sys.modules["sklearn"], sys.modules["sklearn.metrics"] = sk, metrics
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is _MISSING:
                sys.modules.pop(name, None)


def import_modules(modules: tuple[str, ...]) -> None:
    """Import ``modules`` in order (see :func:`without_optional_imports`). A module that fails is skipped: the
    job imports it again and reports the real error then."""
    with without_optional_imports():
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception as exc:  # noqa: BLE001
                log.debug("preload of %s failed: %s", name, exc)

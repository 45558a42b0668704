"""What a new worker process imports before its first job, without the optional imports nothing here uses.

A new host (:mod:`orchestrator.runtime.worker_group`) imports torch, transformers and DeepSpeed as soon as it
starts; on the 2-core reference machine that is ~10 s of CPU per process and most of a cold job's start-up
(issue #13). About 3.5 s of it are three optional imports that no training or RL code here reaches:

* ``mlflow``: DeepSpeed's autotuner does ``try: import mlflow`` at import time (to log autotuning trials; we
  never autotune). Workers that log (rank 0's sample tables) import mlflow themselves when they first do.
* ``sklearn.metrics``: transformers' ``generation.candidate_generator`` imports ``roc_curve`` whenever
  scikit-learn is installed (it is: mlflow depends on it), for assisted decoding's threshold tuning only.
* ``scipy.optimize`` (~0.7 s): transformers' ``loss.loss_for_object_detection`` imports
  ``linear_sum_assignment`` whenever SciPy is installed, for DETR-style matching only; every model's
  ``modeling_utils`` reaches it through ``loss_utils``.

:func:`import_modules` imports a list of modules with ``mlflow`` hidden (DeepSpeed then takes its own
"mlflow unavailable" branch) and ``sklearn.metrics`` / ``scipy.optimize`` replaced by stand-ins whose
functions import the real ones on first call; all are restored as soon as the imports finish, so a later
``import mlflow``, ``import sklearn`` or ``import scipy`` in the process gets the real packages. Two directory
scans transformers repeats in every process come from a disk cache meanwhile
(:mod:`orchestrator.runtime.import_cache`). Measured (CPU seconds of one process importing a training worker's
preload, quiet 2-core machine, median of 7: ``python bench/startup.py --only imports --repeat 7``): 10.0 with
plain imports, 7.3 with the stand-ins, 5.5 with the stand-ins and the cached scans.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import logging
import sys
import types
from typing import Any, Iterator

from orchestrator.runtime.import_cache import cached_import_scans

log = logging.getLogger(__name__)
_MISSING = object()

PRELOAD_ENV = "ORCHESTRATOR_WORKER_PRELOAD"
"""Modules (comma-separated) that :mod:`orchestrator.runtime.worker_preload` imports in new Ray workers."""


_STAND_INS = {"sklearn.metrics": ("roc_curve",), "scipy.optimize": ("linear_sum_assignment",)}
"""Optional modules replaced while a preload imports, with the functions the importers take from them."""


def _lazy(module: str, name: str) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"``{module}.{name}``, imported on first call."
    return call


def _stand_in(name: str, is_package: bool = False) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=is_package)
    if is_package:
        module.__path__ = []  # type: ignore[attr-defined]
    return module


@contextlib.contextmanager
def without_optional_imports() -> Iterator[None]:
    """Hide ``mlflow`` and stand in for the modules of :data:`_STAND_INS` while the body imports (see the module
    doc). Nothing is changed for a package that is already imported."""
    names = ["mlflow"] + [n for sub in _STAND_INS for n in (sub.split(".")[0], sub)]
    saved = {name: sys.modules.get(name, _MISSING) for name in names}
    if saved["mlflow"] is _MISSING:
        sys.modules["mlflow"] = None  # type: ignore[assignment]  # ``import mlflow`` raises ImportError
    for sub, functions in _STAND_INS.items():
        package = sub.split(".")[0]
        if saved[package] is not _MISSING or saved[sub] is not _MISSING:
            continue
        parent, child = _stand_in(package, is_package=True), _stand_in(sub)
        for fn in functions:
            setattr(child, fn, _lazy(sub, fn))
        setattr(parent, sub.split(".", 1)[1], child)
        sys.modules[package], sys.modules[sub] = parent, child
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is _MISSING:
                sys.modules.pop(name, None)


def import_modules(modules: tuple[str, ...]) -> None:
    """Import ``modules`` in order (see :func:`without_optional_imports`). A module that fails is skipped: the
    job imports it again and reports the real error then."""
    with without_optional_imports(), cached_import_scans():
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception as exc:  # noqa: BLE001
                log.debug("preload of %s failed: %s", name, exc)


def import_in_background(*modules: str) -> None:
    """Import what a driver needs next in a daemon thread, so the imports overlap its waits (``ray.init`` on its
    processes, Ray tasks). Failures are ignored here: the job's own import raises them where they matter."""
    import threading

    def work() -> None:
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - see above
                pass

    threading.Thread(target=work, daemon=True, name="preimport").start()

"""Two directory scans that every new worker repeats on import, cached on disk between processes.

Importing ``transformers.models.llama`` in a new process spends ~1.5 s of its ~9 s of CPU (2-core reference
machine) on two scans whose result depends only on files that do not change between jobs:

* ``importlib.metadata.packages_distributions()``: transformers maps every importable top-level name to its
  distribution at import time (``PACKAGE_DISTRIBUTION_MAPPING``), which reads the ``RECORD`` of every installed
  distribution without a ``top_level.txt`` (~110 here: ray, vLLM, MLflow ...).
* transformers' ``define_import_structure``: its lazy modules are built by reading the ``__all__`` of every
  file under ``transformers/`` and ``transformers/models/`` (~3,000 files), once for the package and again for
  ``transformers.models``.

:func:`cached_import_scans` answers both from JSON files under :data:`CACHE_ENV` (default
``$XDG_CACHE_HOME/orchestrator/imports`` or ``~/.cache/...``) while a worker imports its preload list, and
computes and writes them when missing. A key holds what the scan reads: the distributions' metadata
directories on ``sys.path`` with their modification times (installing, removing or upgrading a distribution
changes them) for the first; transformers' version, the file of ``import_utils`` and the scanned directory with their modification
times for the second. JSON rather than pickle: a cache file is data, never code. Anything unexpected (no
writable cache directory, a result of an unknown shape, a corrupt file) falls back to the real scan; nothing
outside the ``with`` block is changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.abc
import importlib.machinery
import importlib.metadata
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

from orchestrator.core.files import atomic_write_text

log = logging.getLogger(__name__)

CACHE_ENV = "ORCHESTRATOR_IMPORT_CACHE"
"""Directory of the cached scans; ``0`` turns the cache off."""

_IMPORT_UTILS = "transformers.utils.import_utils"


def cache_dir() -> Path | None:
    configured = os.environ.get(CACHE_ENV)
    if configured == "0":
        return None
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "orchestrator" / "imports"


def _cached(kind: str, key: tuple[Any, ...], compute: Callable[[], Any], encode: Callable[[Any], Any],
            decode: Callable[[Any], Any]) -> Any:
    """``compute()``'s value, from ``<cache>/<kind>-<hash of key>.json`` when there (``decode``), else computed
    and written (``encode``; ``None`` when the value's shape is not one it knows: not cached)."""
    root = cache_dir()
    if root is None:
        return compute()
    path = root / f"{kind}-{hashlib.sha256(repr(key).encode()).hexdigest()[:32]}.json"
    try:
        return decode(json.loads(path.read_text()))
    except FileNotFoundError:
        pass
    except Exception as exc:  # noqa: BLE001 - a corrupt or foreign file: scan again and rewrite it
        log.debug("import cache %s unreadable (%s): scanning", path, exc)
    value = compute()
    try:
        encoded = encode(value)
        if encoded is not None:
            root.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(encoded))
    except (OSError, TypeError, ValueError) as exc:
        log.debug("import cache %s not written: %s", path, exc)
    return value


def _mtime(path: str | os.PathLike[str]) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def _path_key() -> tuple[Any, ...]:
    """The distributions ``importlib.metadata`` finds on ``sys.path`` ('' is the working directory): each
    ``*.dist-info`` / ``*.egg-info`` entry with its modification time (installing, removing or upgrading one
    changes this; files written next to them, in a working directory on the path, do not)."""
    key = []
    for entry in sys.path:
        path = os.path.abspath(entry or os.getcwd())
        try:
            names = sorted(n for n in os.listdir(path) if n.endswith((".dist-info", ".egg-info")))
        except OSError:
            continue
        key.append((path, tuple((n, _mtime(os.path.join(path, n))) for n in names)))
    return tuple(key)


def _packages_distributions(real: Callable[[], Any]) -> Callable[[], Any]:
    def encode(value: Any) -> Any:
        if isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, list) for k, v in value.items()):
            return value
        return None

    def packages_distributions() -> Any:
        return _cached("packages_distributions", ("v1", _path_key()), real, encode, dict)

    return packages_distributions


def _encode_structure(value: Any) -> Any:
    """transformers' import structure ``{frozenset(backends): {module: {names}}}`` as JSON lists."""
    if not isinstance(value, dict):
        return None
    out = []
    for backends, modules in value.items():
        if not (isinstance(backends, frozenset) and isinstance(modules, dict)):
            return None
        if not all(isinstance(m, str) and isinstance(n, set) for m, n in modules.items()):
            return None
        out.append([sorted(backends), {m: sorted(n) for m, n in modules.items()}])
    return out


def _decode_structure(data: Any) -> dict[frozenset[str], dict[str, set[str]]]:
    return {frozenset(backends): {m: set(n) for m, n in modules.items()} for backends, modules in data}


def _define_import_structure(real: Callable[..., Any], import_utils_file: str) -> Callable[..., Any]:
    version = getattr(sys.modules.get("transformers"), "__version__", None)

    def define_import_structure(module_path: Any, prefix: str | None = None) -> Any:
        scanned = Path(module_path)
        scanned = scanned.parent if scanned.is_file() else scanned
        key = ("v1", version, import_utils_file, _mtime(import_utils_file), str(module_path), prefix,
               str(scanned), _mtime(scanned))
        return _cached("transformers_structure", key, lambda: real(module_path, prefix), _encode_structure,
                       _decode_structure)

    return define_import_structure


class _ImportUtilsHook(importlib.abc.MetaPathFinder):
    """Finds ``transformers.utils.import_utils`` as usual and, once it has run, puts the cached
    ``define_import_structure`` in it (before ``transformers/__init__`` takes the name from it)."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if name != _IMPORT_UTILS:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        real_exec = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            real_exec(module)
            real = getattr(module, "define_import_structure", None)
            if callable(real) and getattr(module, "__file__", None):
                module.define_import_structure = _define_import_structure(real, module.__file__)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


@contextlib.contextmanager
def cached_import_scans() -> Iterator[None]:
    """Within the block, the two scans (module doc) come from the cache when a new import makes them."""
    if cache_dir() is None:
        yield
        return
    hook = _ImportUtilsHook()
    real = importlib.metadata.packages_distributions
    sys.meta_path.insert(0, hook)
    importlib.metadata.packages_distributions = _packages_distributions(real)  # type: ignore[assignment]
    try:
        yield
    finally:
        importlib.metadata.packages_distributions = real  # type: ignore[assignment]
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(hook)

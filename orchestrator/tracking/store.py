"""A new local sqlite MLflow store starts as a copy of an empty, fully migrated schema.

MLflow creates a sqlite store by running every Alembic migration since its first release (seconds of
CPU on a small machine; every fresh workspace, so every test, paid it). The migrated, empty schema
depends only on the MLflow version, so it is built once per machine and version under
``$XDG_CACHE_HOME/orchestrator`` (``~/.cache``) and copied. The copy holds no experiment: MLflow adds
its default experiment on first open exactly as for a store it created itself.

Public API:
    prepare_local_store(uri) -> None
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

_SQLITE = "sqlite:///"


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "orchestrator"


def _template() -> Path:
    """The migrated empty schema of this MLflow version (built on first use)."""
    import mlflow

    path = _cache_dir() / f"mlflow-{mlflow.__version__}-schema.db"
    if path.is_file():
        return path
    import sqlalchemy
    from mlflow.store.db.utils import _initialize_tables

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.unlink(missing_ok=True)
    engine = sqlalchemy.create_engine(f"{_SQLITE}{tmp}")
    try:
        _initialize_tables(engine)
    finally:
        engine.dispose()
    os.replace(tmp, path)  # concurrent builders each write their own file; either one wins whole
    return path


def prepare_local_store(uri: str) -> None:
    """When ``uri`` names a sqlite store that does not exist yet, create it from the schema template.

    Never replaces an existing file (a store created meanwhile by another process wins); any failure
    leaves the store to MLflow's own creation path.
    """
    if not uri.startswith(_SQLITE):
        return
    db = Path(uri[len(_SQLITE):])
    if db.exists():
        return
    try:
        template = _template()
        db.parent.mkdir(parents=True, exist_ok=True)
        tmp = db.with_name(f".{db.name}.tmp{os.getpid()}")
        shutil.copyfile(template, tmp)
        try:
            os.link(tmp, db)  # atomic, and fails instead of overwriting a store that appeared meanwhile
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    except Exception as exc:  # e.g. a future MLflow without the helper: MLflow creates the store itself
        log.debug("MLflow schema template not used for %s: %s", uri, exc)

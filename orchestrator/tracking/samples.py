"""Sample tables: a few prompts, the model's responses and a score, every N steps of a run.

One mechanism for every kind that logs them (sft and dpo from the training worker's rank 0, ppo and
grpo from the role controller): the table goes to ``<output_dir>/samples/step_<k>.json`` (readable
without MLflow) and to the run as ``mlflow.log_table`` at the same relative path, where the MLflow UI
shows it as a table (run page, Artifacts). A step replayed after a recovery rewrites its table
(:func:`orchestrator.tracking.tables.log_table` replaces; MLflow's own would append the rows again).

Public API:
    sample_artifact(step) -> str
    log_sample_table(client, run_id, table, step, out_dir) -> Path
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

log = logging.getLogger(__name__)

SAMPLES_DIR = "samples"


def sample_artifact(step: int) -> str:
    """Run-relative path (and path under ``output_dir``) of the table of ``step``."""
    return f"{SAMPLES_DIR}/step_{int(step):06d}.json"


def log_sample_table(client: Any, run_id: Optional[str], table: Mapping[str, Sequence[Any]], step: int,
                     out_dir: str | Path) -> Path:
    """Write ``table`` (column name -> values) under ``out_dir`` and log it into the run.

    Never raises for a tracking failure (a sample table is never worth a failed training step); the
    local copy is always written (atomically). ``client`` None (tracking off) writes the local copy only.

    Returns:
        The local copy's path.
    """
    from orchestrator.core.files import atomic_write_text
    from orchestrator.tracking.tables import log_table, num_rows, plain

    num_rows(table)
    artifact = sample_artifact(step)
    path = Path(out_dir) / artifact
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({k: list(v) for k, v in table.items()}, indent=1, default=plain))
    if client is None or not run_id:
        return path
    try:
        log_table(client, run_id, table, artifact)
    except Exception as exc:
        log.warning("sample table of step %d not logged to MLflow (%s); kept in %s", step, exc, path)
    return path

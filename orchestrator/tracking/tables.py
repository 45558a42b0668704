"""Tables in a run, as MLflow's UI shows them, written whole (a rewrite replaces, never appends).

``MlflowClient.log_table`` appends to a table already in the run: a replayed training step, or a rerun
pipeline reopening its parent run, would duplicate rows. :func:`log_table` writes the same artifact
(pandas' ``orient="split"`` JSON, which ``MlflowClient.load_table`` and the UI read) and registers it in
the run's ``mlflow.loggedArtifacts`` tag as ``log_table`` does, but replaces the file, and needs no pandas.

Public API:
    log_table(client, run_id, table, artifact_file) -> None
    table_json(table) -> str
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence


def num_rows(table: Mapping[str, Sequence[Any]]) -> int:
    """Rows of a column-oriented table; every column must have as many (asserted: a bug otherwise)."""
    lengths = {name: len(col) for name, col in table.items()}
    assert len(set(lengths.values())) <= 1, f"table columns differ in length: {lengths}"
    return next(iter(lengths.values()), 0)


def plain(value: Any) -> Any:
    """JSON's value for a numpy / torch scalar (``.item()``), else its text (``json.dumps(default=)``)."""
    return value.item() if hasattr(value, "item") else str(value)


def table_json(table: Mapping[str, Sequence[Any]]) -> str:
    """``{"columns": [...], "data": [[row], ...]}``: the layout of ``DataFrame.to_json(orient="split")``."""
    columns = list(table)
    rows = [[table[c][i] for c in columns] for i in range(num_rows(table))]
    return json.dumps({"columns": columns, "data": rows}, default=plain)


def log_table(client: Any, run_id: str, table: Mapping[str, Sequence[Any]], artifact_file: str) -> None:
    """Write ``table`` (column -> values) as the run's ``artifact_file`` (``.json``), replacing it."""
    from mlflow.utils.mlflow_tags import MLFLOW_LOGGED_ARTIFACTS

    assert artifact_file.endswith(".json"), artifact_file
    client.log_text(run_id, table_json(table), artifact_file)
    logged = json.loads(client.get_run(run_id).data.tags.get(MLFLOW_LOGGED_ARTIFACTS, "[]"))
    entry = {"path": artifact_file, "type": "table"}
    if entry not in logged:
        client.set_tag(run_id, MLFLOW_LOGGED_ARTIFACTS, json.dumps([*logged, entry]))

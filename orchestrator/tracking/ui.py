"""Links into the MLflow UI that open in its model-training view.

MLflow 3.17's UI has one GenAI / Model-training switch for the whole browser (kept in local storage,
GenAI by default) and it decides how an experiment opens: with the GenAI view an experiment shows
traces, sessions and "Evaluation runs", whatever its ``mlflow.experimentKind`` tag says. The query
parameter ``workflowType=machine_learning`` selects the model-training view (runs, metrics, models) for
the page it is on, so every link we print carries it.

Public API:
    MODEL_TRAINING_VIEW
    ui_link(base_url, experiment_id=None, run_id=None, tab='') -> str
"""

from __future__ import annotations

from typing import Optional

MODEL_TRAINING_VIEW = "workflowType=machine_learning"


def ui_link(base_url: str, experiment_id: Optional[str] = None, run_id: Optional[str] = None, tab: str = "") -> str:
    """``<base>/#/experiments/<id>[/runs/<run>[/<tab>]]?workflowType=machine_learning`` (the experiment
    list without an experiment id; ``tab``: a run page's tab, e.g. ``artifacts``)."""
    base = base_url.rstrip("/")
    if experiment_id is None:
        return f"{base}/#/experiments?{MODEL_TRAINING_VIEW}"
    page = f"experiments/{experiment_id}" + (f"/runs/{run_id}" if run_id else "") + (f"/{tab}" if run_id and tab else "")
    return f"{base}/#/{page}?{MODEL_TRAINING_VIEW}"

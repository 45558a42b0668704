"""The pipeline summary (stage, status, duration, key metric, model version) and the MLflow UI hint."""

from __future__ import annotations

from typing import Any, Mapping


def key_metric(names: tuple[str, ...], result: Mapping[str, Any]) -> str:
    """``name=value`` of the first of a kind's ``key_metrics`` present in its result (or ``eval``/``metrics``)."""
    metrics = {**result, **(result.get("eval") or {}), **(result.get("metrics") or {})}
    for name in names:
        value = metrics.get(name)
        if isinstance(value, (int, float)):
            return f"{name}={value:.4g}" if isinstance(value, float) else f"{name}={value}"
    return ""


def format_summary(summary: Mapping[str, Any]) -> str:
    header = ("stage", "kind", "status", "duration_s", "key_metric", "model_version")
    rows = [[str(r.get(h, "")) for h in header] for r in summary["stages"]]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    out = [f"pipeline {summary['pipeline']} (MLflow run {summary['run_id']}, {summary['duration_s']}s)",
           line(header), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    return "\n".join(out)


def mlflow_ui_hint(tracking_uri: str) -> str:
    """How to open the MLflow UI on the result."""
    if tracking_uri.startswith(("http://", "https://")):
        return f"MLflow UI: {tracking_uri}"
    if tracking_uri:
        return f"Open the MLflow UI:  mlflow ui --backend-store-uri {tracking_uri}  (then browse http://127.0.0.1:5000)"
    return ""

"""The pipeline summary (stage, status, duration, key metric, model version), its overview artifacts
(the same table for the MLflow UI and a picture of the stage DAG coloured by status) and the UI hint."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Sequence


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


def mlflow_ui_hint(tracking_uri: str, experiment_id: Optional[str] = None) -> str:
    """How to open the MLflow UI on the result (links open the model-training view: :mod:`orchestrator.tracking.ui`)."""
    from orchestrator.tracking.ui import ui_link

    if tracking_uri.startswith(("http://", "https://")):
        return f"MLflow UI: {ui_link(tracking_uri, experiment_id)}"
    if tracking_uri:
        return (f"Open the MLflow UI:  mlflow ui --backend-store-uri {tracking_uri}  "
                f"(then browse {ui_link('http://127.0.0.1:5000', experiment_id)})")
    return ""


# ---------------------------------------------------------------------------- overview artifacts
STATUS_COLOURS = {
    "FINISHED": "#2e7d32",  # green: ran and finished in this invocation
    "SKIPPED": "#81c784",   # light green: finished by an earlier run (its completion marker is valid)
    "RUNNING": "#f9a825",   # amber
    "FAILED": "#c62828",    # red
    "NOT_RUN": "#e0e0e0",   # grey: never started (an earlier stage failed or the run was interrupted)
}
"""Fill colour of a stage box in the DAG picture, by status."""
_DARK = {"FINISHED", "FAILED"}  # white text on these fills, black on the others
OVERVIEW_TABLE = "pipeline_overview.json"
OVERVIEW_DAG = "pipeline_dag.svg"
_COLUMNS = ("stage", "kind", "status", "duration_s", "key_metric", "model_version", "run_id")


def overview_rows(stages: Sequence[Any], rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per stage of the pipeline, in its order: the runner's row, or ``NOT_RUN`` for a stage it
    never reached."""
    done = {r["stage"]: r for r in rows}
    blank = {"duration_s": "", "key_metric": "", "model_version": "", "run_id": ""}
    return [{c: done.get(s.name, {**blank, "stage": s.name, "kind": s.kind, "status": "NOT_RUN"}).get(c, "")
             for c in _COLUMNS} for s in stages]


def dag_levels(stages: Sequence[Any]) -> dict[str, int]:
    """Column of each stage in the picture: 0 without ``after``, else one right of its latest input."""
    level: dict[str, int] = {}
    for s in stages:  # stages come in dependency order (each ``after`` names an earlier stage)
        level[s.name] = 1 + max((level.get(a, 0) for a in s.after), default=-1)
    return level


def dag_svg(stages: Sequence[Any], rows: Sequence[Mapping[str, Any]], title: str = "") -> str:
    """An SVG picture of the stage DAG: one box per stage coloured by status, arrows along ``after``,
    a legend. Plain text, no plotting library, nothing fetched: it renders in the MLflow artifact view."""
    from xml.sax.saxutils import escape

    w, h, gap_x, gap_y, pad, top = 190, 62, 56, 22, 16, 34
    level = dag_levels(stages)
    slots: dict[int, int] = {}
    pos: dict[str, tuple[int, int]] = {}
    for s in stages:
        col = level[s.name]
        pos[s.name] = (pad + col * (w + gap_x), top + slots.get(col, 0) * (h + gap_y))
        slots[col] = slots.get(col, 0) + 1
    width = pad * 2 + (max(level.values(), default=0) + 1) * (w + gap_x) - gap_x
    height = top + max(slots.values(), default=1) * (h + gap_y) - gap_y + 48
    by_stage = {r["stage"]: r for r in rows}
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" markerHeight="8" '
           'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#555"/></marker></defs>',
           f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
           f'<text x="{pad}" y="22" font-size="14" font-weight="bold">{escape(title)}</text>']
    for s in stages:
        x1, y1 = pos[s.name]
        for a in s.after:
            x0, y0 = pos[a]
            sx, sy, ex, ey = x0 + w, y0 + h // 2, x1, y1 + h // 2
            out.append(f'<path class="edge" data-from="{escape(a)}" data-to="{escape(s.name)}" '
                       f'd="M {sx} {sy} C {sx + gap_x // 2} {sy}, {ex - gap_x // 2} {ey}, {ex} {ey}" '
                       'fill="none" stroke="#555" stroke-width="1.5" marker-end="url(#arrow)"/>')
    for s in stages:
        x, y = pos[s.name]
        row = by_stage.get(s.name, {"status": "NOT_RUN"})
        status = str(row.get("status", "NOT_RUN"))
        fill, ink = STATUS_COLOURS.get(status, "#e0e0e0"), "#ffffff" if status in _DARK else "#000000"
        dur = row.get("duration_s") if status != "SKIPPED" else None  # a skipped stage took no time now
        detail = " ".join(p for p in (f"{dur}s" if dur not in ("", None) else "", str(row.get("key_metric") or "")) if p)
        label = s.name if s.name == s.kind else f"{s.name} ({s.kind})"
        out += [f'<g class="stage" data-stage="{escape(s.name)}" data-status="{escape(status)}">',
                f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="8" fill="{fill}" stroke="#333"/>',
                f'<text x="{x + 10}" y="{y + 19}" fill="{ink}" font-weight="bold">{escape(label[:26])}</text>',
                f'<text x="{x + 10}" y="{y + 36}" fill="{ink}">{escape(status)}</text>',
                f'<text x="{x + 10}" y="{y + 52}" fill="{ink}" font-size="11">{escape(detail[:30])}</text>', '</g>']
    lx, ly = pad, height - 18
    for status, colour in STATUS_COLOURS.items():
        out += [f'<rect x="{lx}" y="{ly - 10}" width="12" height="12" fill="{colour}" stroke="#333"/>',
                f'<text x="{lx + 16}" y="{ly}">{status}</text>']
        lx += 24 + 8 * len(status)
    out.append("</svg>")
    return "\n".join(out)


def log_overview(tracker: Any, stages: Sequence[Any], rows: Sequence[Mapping[str, Any]], title: str,
                 output_dir: str | Path) -> Path:
    """The pipeline run's overview: the table (stage, kind, status, duration, key metric, model version,
    run id) as ``pipeline_overview.json`` and the DAG picture as ``pipeline_dag.svg``, both in the run and
    the picture also under ``output_dir``. Returns the local picture's path."""
    from orchestrator.core.files import atomic_write_text

    table_rows = overview_rows(stages, rows)
    svg = dag_svg(stages, table_rows, title)
    path = Path(output_dir) / OVERVIEW_DAG
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, svg)
    tracker.log_table({c: [r[c] for r in table_rows] for c in _COLUMNS}, OVERVIEW_TABLE)
    tracker.log_text(svg, OVERVIEW_DAG)
    return path

"""Hydra sweeps from the command line: ``orchestrator run <kind> -m key=a,b ...`` (or ``--multirun``).

The points are expanded with Hydra's own basic sweeper (``a,b`` lists, ``range(...)``, ``choice(...)``),
so they mean what they mean for ``python -m jobs.<kind> -m``. Every point is an ordinary job of the kind,
composed and validated before the first one starts, with its own run name (``<run_name>-<overrides>``)
and output directory. Locally the points run one after the other as children of one MLflow sweep run,
and a comparison table (point, status, key metric) ends the sweep; with ``cluster.address`` set, each
point is submitted as its own Ray job instead.
"""

from __future__ import annotations

import dataclasses
import re
import time
from typing import Any, Sequence

from orchestrator import kinds
from orchestrator.config.errors import ConfigError
from orchestrator.core.console import say

MULTIRUN_FLAGS = ("-m", "--multirun")


def expand(overrides: Sequence[str]) -> list[list[str]]:
    """The override list of every sweep point (a list of one point when nothing sweeps).

    Raises:
        ConfigError: an override Hydra's parser refuses.
    """
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except Exception as exc:  # Hydra's grammar errors: the message names the override
        raise ConfigError("overrides", str(exc).splitlines()[0], "check the sweep syntax: key=a,b or key=range(a,b)") from None
    return [point for batch in BasicSweeper.split_arguments(parsed, None) for point in batch]


def _slug(point: Sequence[str], swept: set[str]) -> str:
    """``lr_0.001-max_steps_3`` from the swept overrides of a point (a valid run name)."""
    parts = []
    for o in point:
        key, _, value = o.partition("=")
        if key.lstrip("+~") in swept:
            parts.append(f"{key.rsplit('.', 1)[-1]}_{value}")
    return re.sub(r"[^A-Za-z0-9_.-]", "_", "-".join(parts))[:80] or "point"


def load_points(kind: str, overrides: Sequence[str]) -> list[tuple[list[str], Any]]:
    """Every point's overrides and validated config; the first bad point raises, naming the point."""
    swept = {o.split("=", 1)[0].lstrip("+~") for o in overrides if "=" in o and _is_sweep(o)}
    out = []
    for point in expand(overrides):
        try:
            cfg = kinds.load(kind, point)
            if not any(o.startswith("run_name=") for o in point):  # each point its own run and directory
                cfg = kinds.load(kind, [*point, f"run_name={cfg.run_name}-{_slug(point, swept)}"])
        except ConfigError as exc:
            raise ConfigError(exc.key, f"{exc.problem} (sweep point {' '.join(point)})", exc.fix) from None
        out.append((point, cfg))
    return out


def _is_sweep(override: str) -> bool:
    value = override.split("=", 1)[1]
    return "," in value or value.startswith(("range(", "choice(", "glob(", "interval("))


def run_sweep(kind: str, overrides: Sequence[str]) -> dict[str, Any]:
    """Validate every point, then run them (locally) or submit them (``cluster.address`` set)."""
    points = load_points(kind, overrides)
    first = points[0][1]
    if first.dry_run:
        from orchestrator.entry import dry_run_text

        for point, cfg in points:
            print(f"# point: {' '.join(point)}\n{dry_run_text(cfg)}")
        return {"points": len(points)}
    if first.cluster.address is not None:
        return _submit_points(kind, points)
    return _run_points(kind, points)


def _run_points(kind: str, points: list[tuple[list[str], Any]]) -> dict[str, Any]:
    from orchestrator.core.console import capture, quiet_libraries
    from orchestrator.pipeline.summary import key_metric
    from orchestrator.runtime.ray_runtime import ray_session
    from orchestrator.tracking import job_run

    quiet_libraries()
    spec = kinds.get(kind)
    first = points[0][1]
    name = f"{kind}-sweep-{_digest([p for p, _ in points])}"
    parent_cfg = dataclasses.replace(first, run_name=name, output_dir=f"{first.workspace}/{name}")
    rows: list[dict[str, Any]] = []
    t0 = time.time()
    with capture(f"{parent_cfg.output_dir}/logs/orchestrator.log", plain_errors=(ConfigError,)), \
            job_run(parent_cfg, extra_tags={"sweep": kind, "sweep_points": str(len(points))}) as parent, \
            ray_session(first.cluster):
        for i, (point, cfg) in enumerate(points, 1):
            tracking = dataclasses.replace(cfg.tracking, parent_run_id=parent.run_id,
                                           tags={**cfg.tracking.tags, "sweep_point": " ".join(point)})
            cfg = dataclasses.replace(cfg, tracking=tracking)
            cfg.freeze()
            say(f"[{i}/{len(points)}] {cfg.run_name}: running")
            start = time.time()
            try:
                result, status = dict(spec.run(cfg) or {}), "FINISHED"
            except Exception as exc:  # one failed point does not stop the sweep; it is reported
                result, status = {"error": f"{type(exc).__name__}: {exc}"}, "FAILED"
            rows.append({"point": " ".join(point), "run_name": cfg.run_name, "status": status,
                         "duration_s": round(time.time() - start, 1), "key_metric": key_metric(spec.key_metrics, result),
                         "run_id": result.get("run_id") or ""})
        table = format_table(rows)
        parent.log_dict({"kind": kind, "points": rows}, "sweep_summary.json")
        parent.log_text(table, "sweep_summary.md")
    say(table)
    say(f"sweep of {len(points)} points in {time.time() - t0:.0f}s")
    if any(r["status"] == "FAILED" for r in rows):
        raise SystemExit(1)
    return {"points": rows, "parent_run_id": parent.run_id}


def _submit_points(kind: str, points: list[tuple[list[str], Any]]) -> dict[str, Any]:
    from orchestrator.runtime import jobs_api

    ids = []
    for point, cfg in points:
        address = jobs_api.resolve_address(None, cfg)
        named = [*point, f"run_name={cfg.run_name}"]
        sub = jobs_api.submit(cfg, named, address, kinds.load)
        ids.append(sub.job_id)
        print(f"submitted {kind} point {' '.join(point)} as job {sub.job_id} on {address}", flush=True)
    return {"job_ids": ids}


def _digest(points: Sequence[Sequence[str]]) -> str:
    import hashlib

    return hashlib.sha256(repr(points).encode()).hexdigest()[:8]


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    header = ("point", "status", "duration_s", "key_metric", "run_id")
    cells = [[str(r.get(h, "")) for h in header] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    line = lambda cs: "  ".join(c.ljust(w) for c, w in zip(cs, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(c) for c in cells)])

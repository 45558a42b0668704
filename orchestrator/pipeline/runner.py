"""Run a pipeline: stages in dependency order under one MLflow parent run, skipping finished ones.

A stage is an ordinary job (same config schema, same runner as ``orchestrator run <kind>``) whose
config is ``pipeline.stage_overrides + stage.overrides + wiring`` with its output directory under
the pipeline's. A finished stage leaves a completion marker (config hash + output digests); a rerun
skips it. A failed or interrupted stage resumes from its own checkpoints on the next run
(``resume=auto``), in the same MLflow child run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any, Protocol

from orchestrator.config.errors import ConfigError
from orchestrator.config.jobs import JobConfig
from orchestrator.config.pipeline import StageConfig
from orchestrator.core.console import say
from orchestrator.pipeline.markers import read_valid_marker, write_marker
from orchestrator.pipeline.summary import format_summary, key_metric, log_overview, mlflow_ui_hint
from orchestrator.pipeline.wiring import upstream_model_tag, wired_keys, wiring_overrides
from orchestrator.runtime.ray_runtime import ray_session
from orchestrator.tracking import config_hash, job_run


class Kinds(Protocol):
    """The job-kind registry as the pipeline sees it (``orchestrator.kinds.pipeline.Kinds``)."""

    def get(self, kind: str) -> Any: ...

    def load(self, kind: str, overrides: list[str]) -> JobConfig: ...


def _cluster_overrides(cfg: Any) -> list[str]:
    c = cfg.cluster
    address = "null" if c.address is None else c.address
    num_cpus = "null" if c.num_cpus is None else c.num_cpus
    return [f"cluster.address={address}", f"cluster.num_workers={c.num_workers}", f"cluster.use_gpu={c.use_gpu}",
            f"cluster.cpus_per_worker={c.cpus_per_worker}", f"cluster.num_cpus={num_cpus}"]


def stage_config(cfg: Any, stage: StageConfig, wiring: list[str], kinds: Kinds, parent_run_id: str | None = None,
                 tags: dict[str, str] | None = None) -> JobConfig:
    """The typed, validated config of one stage (raises ConfigError naming the stage's key)."""
    overrides = [
        f"workspace={cfg.workspace}", f"run_name={cfg.run_name}-{stage.name}", f"output_dir={Path(cfg.output_dir) / stage.name}",
        f"tracking.uri={cfg.tracking.uri}", f"tracking.experiment={cfg.tracking.experiment}",
        f"tracking.enabled={cfg.tracking.enabled}", f"resume={'never' if cfg.resume == 'never' else 'auto'}",
        *_cluster_overrides(cfg), *cfg.pipeline.stage_overrides,
        *(cfg.pipeline.train_overrides if stage.kind != "data_prep" else []), *stage.overrides, *wiring,
    ]
    stage_cfg = kinds.load(stage.kind, overrides)
    tracking = dataclasses.replace(
        stage_cfg.tracking, parent_run_id=parent_run_id,
        tags={**stage_cfg.tracking.tags, "pipeline": cfg.pipeline.name, "pipeline_stage": stage.name, **(tags or {})})
    stage_cfg = dataclasses.replace(stage_cfg, tracking=tracking)
    stage_cfg.freeze()
    return stage_cfg


def validate_stages(cfg: Any, kinds: Kinds) -> None:
    """Refuse any bad stage config (called by config validation, so before Ray starts and in dry runs).

    Raises:
        ConfigError: keyed ``pipeline.stages[<name>].<key>``.
    """
    for stage in cfg.pipeline.stages:
        try:
            stage_config(cfg, stage, [], kinds)
        except ConfigError as exc:
            if exc.key not in wired_keys(kinds.get(stage.kind)):  # wired inputs do not exist yet; they are checked when wired
                raise ConfigError(f"pipeline.stages[{stage.name}].{exc.key}", exc.problem, exc.fix) from None


def _stage_hash(stage_cfg: JobConfig, upstream: list[tuple[str, dict[str, Any]]]) -> str:
    h = hashlib.sha256(config_hash(stage_cfg).encode())
    for _, record in upstream:
        h.update(json.dumps(record.get("digests", {}), sort_keys=True).encode())
    return h.hexdigest()[:16]


def run_pipeline(cfg: Any, kinds: Kinds) -> dict[str, Any]:
    """Run every stage of ``cfg.pipeline`` (a ``PipelineConfig``); returns the summary (also logged as
    MLflow artifacts: ``pipeline_summary.json``/``.md``, the overview table and the DAG picture)."""
    stages = list(cfg.pipeline.stages)
    by_name = {s.name: s for s in stages}
    records: dict[str, dict[str, Any]] = {}
    rows: list[dict[str, Any]] = []
    t_start = time.time()
    with contextlib.ExitStack() as stack, job_run(cfg, extra_tags={"pipeline": cfg.pipeline.name}) as parent:
        ray_started = False
        try:
            for i, stage in enumerate(stages, 1):
                spec = kinds.get(stage.kind)
                upstream = [(kinds.get(by_name[a].kind), records[a]) for a in stage.after]
                wiring = wiring_overrides(spec, upstream)
                stage_cfg = stage_config(cfg, stage, wiring, kinds, parent.run_id, upstream_model_tag(upstream))
                stage_hash = _stage_hash(stage_cfg, upstream)
                marker = read_valid_marker(stage_cfg.output_dir, stage_hash)
                prefix = f"[{i}/{len(stages)}] {stage.name} ({stage.kind})"
                if marker is not None:
                    result = marker["result"]
                    outputs = {k: v["path"] for k, v in marker["outputs"].items()}
                    digests = {k: v["digest"] for k, v in marker["outputs"].items()}
                    records[stage.name] = {"outputs": outputs, "result": result, "digests": digests}
                    rows.append(_row(stage, spec, "SKIPPED", 0.0, result))
                    say(f"{prefix}: already complete, skipped")
                    continue
                if not ray_started:
                    stack.enter_context(ray_session(cfg.cluster))
                    ray_started = True
                say(f"{prefix}: running")
                t0 = time.time()
                try:
                    result = dict(spec.run(stage_cfg) or {})
                except BaseException:
                    rows.append(_row(stage, spec, "FAILED", time.time() - t0, {}))
                    raise
                if result.get("model_version"):  # jobs register their model under the run name
                    result.setdefault("model_name", stage_cfg.run_name)
                outputs = spec.outputs(result, stage_cfg.output_dir)
                _tag_model_lineage(parent, result, stage_cfg.tracking.tags)
                write_marker(stage_cfg.output_dir, config_hash=stage_hash, outputs=outputs, result=_jsonable(result))
                marker = read_valid_marker(stage_cfg.output_dir, stage_hash)
                assert marker is not None
                digests = {k: v["digest"] for k, v in marker["outputs"].items()}
                records[stage.name] = {"outputs": outputs, "result": result, "digests": digests}
                rows.append(_row(stage, spec, "FINISHED", time.time() - t0, result))
                say(f"{prefix}: done in {time.time() - t0:.1f}s ({rows[-1]['key_metric']})")
        finally:
            summary = {"pipeline": cfg.pipeline.name, "run_id": parent.run_id, "stages": rows,
                       "duration_s": round(time.time() - t_start, 2)}
            parent.log_dict(summary, "pipeline_summary.json")
            parent.log_text(format_summary(summary), "pipeline_summary.md")
            try:  # the overview must not hide the exception that brought us here
                log_overview(parent, stages, rows, f"pipeline {cfg.pipeline.name}", cfg.output_dir)
            except Exception as exc:
                logging.getLogger(__name__).warning("pipeline overview not logged: %s", exc)
    say(format_summary(summary))
    hint = mlflow_ui_hint(cfg.tracking.uri or "", parent.experiment_id)
    if hint:
        say(hint)
    return summary


def _tag_model_lineage(parent: Any, result: dict[str, Any], tags: dict[str, str]) -> None:
    """Put the upstream model version / dataset digest on the stage's registered model version, so
    the registry alone walks back from the final model to the data."""
    if not (result.get("model_name") and result.get("model_version")):
        return
    for key in ("upstream_model", "upstream_reward_model", "upstream_dataset_digest", "pipeline", "pipeline_stage"):
        if key in tags:
            parent.client.set_model_version_tag(result["model_name"], str(result["model_version"]), key, tags[key])


def _row(stage: StageConfig, spec: Any, status: str, duration_s: float, result: dict[str, Any]) -> dict[str, Any]:
    version = f"{result.get('model_name')}/{result['model_version']}" if result.get("model_version") else ""
    return {"stage": stage.name, "kind": stage.kind, "status": status, "duration_s": round(duration_s, 2),
            "key_metric": key_metric(spec.key_metrics, result), "model_version": version,
            "run_id": result.get("run_id", "")}


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))

"""``pipeline``: a DAG of job stages under one MLflow parent run, finished stages skipped on rerun.

Each stage is an ordinary job of another kind (same schema, checks and runner as ``orchestrator run
<kind>``); its inputs are wired from the ``outputs`` of the stages it comes ``after``, as each kind's
spec declares (:mod:`orchestrator.kinds.registry`). Runner: :mod:`orchestrator.pipeline.runner`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from orchestrator.config.errors import ConfigError, require
from orchestrator.config.jobs import JobConfig
from orchestrator.config.pipeline import PipelineSpec
from orchestrator.kinds import registry
from orchestrator.kinds.registry import KindSpec


@dataclass
class PipelineConfig(JobConfig):
    kind: str = "pipeline"
    pipeline: PipelineSpec = field(default_factory=PipelineSpec)
    """The stage DAG."""


class Kinds:
    """What the pipeline runner needs of the registry (handed to it, so the pipeline layer stays below
    the kinds): spec lookup and config loading."""

    get = staticmethod(registry.get)

    @staticmethod
    def load(kind: str, overrides: list[str]) -> Any:
        from orchestrator.kinds import load

        return load(kind, overrides)


def check(cfg: PipelineConfig) -> None:
    """Every stage names a kind that can be a stage, and every stage's own config is valid (wired inputs
    excepted: they do not exist yet), all before Ray starts."""
    from orchestrator.pipeline.runner import validate_stages

    require(len(cfg.pipeline.stages) > 0, "pipeline.stages", "the pipeline has no stages",
            "pick a preset, e.g. pipeline=default")
    stage_kinds = [n for n in registry.names() if registry.get(n).pipeline_stage]
    for i, s in enumerate(cfg.pipeline.stages):
        if s.kind not in stage_kinds:
            raise ConfigError(f"pipeline.stages[{i}].kind", f"unknown job kind {s.kind!r}",
                              f"use one of {', '.join(stage_kinds)}")
    validate_stages(cfg, Kinds)


def plan(cfg: PipelineConfig) -> dict[str, Any]:
    return {"stages": [f"{s.name} ({s.kind})" + (f" after {', '.join(s.after)}" if s.after else "")
                       for s in cfg.pipeline.stages]}


def run(cfg: PipelineConfig) -> Mapping[str, Any]:
    from orchestrator.pipeline.runner import run_pipeline

    return run_pipeline(cfg, Kinds)


SPEC = KindSpec(
    name="pipeline", config=PipelineConfig, run=run, check=check, plan=plan, pipeline_stage=False,
    summary="a DAG of stages (default: data_prep -> pretrain -> sft -> reward_model -> ppo) under one MLflow run",
)

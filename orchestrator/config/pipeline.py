"""``pipeline`` group: the stage DAG of a pipeline job."""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestrator.config.base import Frozen
from orchestrator.config.errors import require


@dataclass
class StageConfig(Frozen):
    name: str = ""
    """Stage name, unique in the pipeline (also its output sub-directory and MLflow child run name)."""
    kind: str = ""
    """Job kind of the stage: any kind whose spec allows pipeline stages (checked by the pipeline kind)."""
    overrides: list[str] = field(default_factory=list)
    """Hydra overrides applied to the stage's primary config (e.g. ``trainer.max_steps=50``)."""
    after: list[str] = field(default_factory=list)
    """Stages whose outputs this stage consumes; their datasets/models are wired in automatically."""


@dataclass
class PipelineSpec(Frozen):
    name: str = "default"
    """Pipeline preset name (MLflow tag ``pipeline``)."""
    stages: list[StageConfig] = field(default_factory=list)
    """Stages in dependency order."""
    stage_overrides: list[str] = field(default_factory=list)
    """Overrides applied to every stage, before each stage's own."""
    train_overrides: list[str] = field(default_factory=list)
    """Overrides applied to every training stage (all kinds but data_prep), e.g. ``model=tiny``."""

    def __post_init__(self) -> None:
        names = [s.name for s in self.stages]
        require(len(names) == len(set(names)), "pipeline.stages", f"duplicate stage names in {names}",
                "give every stage a unique name")
        seen: set[str] = set()
        for i, s in enumerate(self.stages):
            for dep in s.after:
                require(dep in seen, f"pipeline.stages[{i}].after",
                        f"{dep!r} is not an earlier stage", "list stages in dependency order")
            seen.add(s.name)

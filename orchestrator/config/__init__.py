"""Typed configuration shared by the kinds: dataclass schemas of the groups, Hydra composition,
cross-group validation and the training plan. Each kind's primary config lives in its module under
``orchestrator.kinds``; ``orchestrator.kinds.load(kind, overrides)`` is the way to load one."""

from orchestrator.config.errors import ConfigError
from orchestrator.config.jobs import JobConfig, TrainJobConfig

__all__ = ["ConfigError", "JobConfig", "TrainJobConfig"]

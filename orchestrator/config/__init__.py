"""Typed configuration: dataclass schemas, Hydra composition, validation and the derived plan."""

from orchestrator.config.errors import ConfigError
from orchestrator.config.jobs import (
    PRIMARY_SCHEMAS,
    DataPrepConfig,
    DPOConfig,
    JobConfig,
    PipelineConfig,
    PPOConfig,
    PretrainConfig,
    RewardModelConfig,
    SFTConfig,
    TrainJobConfig,
)

__all__ = [
    "ConfigError", "PRIMARY_SCHEMAS", "JobConfig", "TrainJobConfig", "DataPrepConfig", "PretrainConfig",
    "SFTConfig", "RewardModelConfig", "PPOConfig", "DPOConfig", "PipelineConfig",
]

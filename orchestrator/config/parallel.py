"""``parallel`` group: how DeepSpeed shards the model inside the Ray workers."""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.config.base import Frozen
from orchestrator.config.errors import require

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
OFFLOADS = ("none", "cpu")
PARTITIONS = ("parameters", "uniform")


@dataclass
class ParallelConfig(Frozen):
    zero_stage: int = 0
    """DeepSpeed ZeRO stage 0-3: 1 shards optimizer states, 2 also gradients, 3 also parameters."""
    tensor_parallel: int = 1
    """Tensor-parallel degree (DeepSpeed AutoTP); must divide model.num_heads."""
    pipeline_parallel: int = 1
    """Pipeline stages (DeepSpeed PipelineModule); must divide model.num_layers; needs ZeRO <= 1."""
    offload: str = "none"
    """Offload optimizer states (ZeRO >= 1) and, with ZeRO-3, parameters to ``cpu``."""
    micro_batch_size: int = 1
    """Sequences per worker per forward pass; gradient accumulation fills the global batch."""
    precision: str = "auto"
    """``auto`` = bf16 on GPU, fp32 on CPU (CPU runs are bit-exact); or force fp32/bf16/fp16."""
    pipeline_partition: str = "parameters"
    """How PipelineModule splits layers over stages: balance ``parameters`` or ``uniform`` layers."""
    activation_checkpointing: bool = False
    """Recompute activations in backward to save memory (about 33% more compute)."""

    def __post_init__(self) -> None:
        require(self.zero_stage in (0, 1, 2, 3), "parallel.zero_stage",
                f"{self.zero_stage} is not a ZeRO stage", "use 0, 1, 2 or 3")
        for name in ("tensor_parallel", "pipeline_parallel", "micro_batch_size"):
            require(getattr(self, name) >= 1, f"parallel.{name}", "must be >= 1", "set a value >= 1")
        require(self.offload in OFFLOADS, "parallel.offload", f"unknown offload {self.offload!r}",
                f"use one of {', '.join(OFFLOADS)}")
        require(self.precision in PRECISIONS, "parallel.precision", f"unknown precision {self.precision!r}",
                f"use one of {', '.join(PRECISIONS)}")
        require(self.pipeline_partition in PARTITIONS, "parallel.pipeline_partition",
                f"unknown partition method {self.pipeline_partition!r}", f"use one of {', '.join(PARTITIONS)}")
        require(not (self.offload == "cpu" and self.zero_stage == 0), "parallel.offload",
                "CPU offload needs ZeRO >= 1", "set parallel.zero_stage>=1 or parallel.offload=none")
        require(not (self.pipeline_parallel > 1 and self.zero_stage >= 2), "parallel.zero_stage",
                f"ZeRO-{self.zero_stage} cannot be combined with pipeline_parallel={self.pipeline_parallel}"
                " (DeepSpeed's pipeline engine supports ZeRO 0/1 only)",
                "set parallel.zero_stage=1 or parallel.pipeline_parallel=1")

    def resolved_precision(self, use_gpu: bool) -> str:
        """The precision actually used: ``auto`` means bf16 on GPU, fp32 on CPU."""
        if self.precision == "auto":
            return "bf16" if use_gpu else "fp32"
        return self.precision

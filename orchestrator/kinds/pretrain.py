"""``pretrain``: a causal LM from scratch (or continued) on packed token blocks.

Runs on the shared driver and worker (:mod:`orchestrator.training.driver`): a Ray worker group with
DeepSpeed ZeRO 0-3, AutoTP (``parallel.tensor_parallel``) or a PipelineModule
(``parallel.pipeline_parallel``), exact resume, in-job recovery, a Hugging Face export. Reads
``data.path`` of format ``pretrain`` (the demo corpus when null); output ``model`` (the export).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from orchestrator.config.jobs import TrainJobConfig
from orchestrator.kinds.registry import KindSpec, model_output
from orchestrator.training.task import Objective, TrainTask, WorkerContext


@dataclass
class PretrainConfig(TrainJobConfig):
    kind: str = "pretrain"


class PretrainTask(TrainTask):
    """Next-token loss on every token of the packed blocks; no initial eval (a random model's is noise)."""

    data_format = "pretrain"
    initial_eval = False

    def objective(self, ctx: WorkerContext) -> Objective:
        from orchestrator.training.loop import causal_lm_objective

        return causal_lm_objective


def run(cfg: PretrainConfig) -> Mapping[str, Any]:
    from orchestrator.training.driver import run_training

    return run_training(cfg, PretrainTask())


SPEC = KindSpec(
    name="pretrain", config=PretrainConfig, run=run, outputs=model_output, data_format="pretrain",
    summary="pretrain a causal LM on packed blocks (DeepSpeed ZeRO/TP/PP on a Ray worker group)",
    model_inputs={"*": "model.pretrained"}, key_metrics=("eval_ppl", "eval_loss", "final_loss", "loss"),
    worker_group=True, tensor_parallel=True, pipeline_parallel=True,
)

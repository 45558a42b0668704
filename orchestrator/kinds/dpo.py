"""``dpo``: DPO (Rafailov et al., 2023) of a policy against a frozen reference, on preference pairs.

Shared driver and worker (:mod:`orchestrator.training.driver`); the loss is
:func:`orchestrator.rlhf.preference.dpo_loss`, with the reference held frozen in every worker
(``dpo.reference`` or, by default, a copy of ``model.pretrained``). Held-out metrics: the implicit
reward margin ``beta * ((log pi - log ref)(y_w) - (log pi - log ref)(y_l))`` and the share of pairs it
ranks correctly, before and after training. Output ``model`` (the export).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from orchestrator.config.jobs import TrainJobConfig
from orchestrator.config.rlhf import DPOOptions
from orchestrator.kinds.registry import KindSpec, model_output
from orchestrator.training.task import Objective, TrainTask, WorkerContext

METRICS = ("loss", "accuracy", "margin", "chosen_reward", "rejected_reward")


@dataclass
class DPOConfig(TrainJobConfig):
    kind: str = "dpo"
    dpo: DPOOptions = field(default_factory=DPOOptions)
    """DPO options."""


def dpo_objective(reference: Any, beta: float, label_smoothing: float) -> Objective:
    """Policy vs frozen reference sequence log-probabilities of chosen (first half) and rejected rows."""
    import torch

    from orchestrator.rlhf.batches import token_logprobs
    from orchestrator.rlhf.preference import dpo_loss, sequence_logprobs

    def objective(engine: Any, mb: dict) -> tuple[Any, dict[str, float]]:
        mask = mb["loss_mask"][:, 1:]
        pol = sequence_logprobs(token_logprobs(engine, mb), mask)
        with torch.no_grad():
            ref = sequence_logprobs(token_logprobs(reference, mb), mask)
        b = pol.shape[0] // 2
        return dpo_loss(pol[:b], pol[b:], ref[:b], ref[b:], beta, label_smoothing)

    return objective


class DPOTask(TrainTask):
    data_format = "preference"
    upstream_keys = ("dpo.reference",)

    def reference(self, ctx: WorkerContext) -> Any:
        """The frozen reference: ``dpo.reference``, else the policy's starting point built exactly as the
        policy is (:meth:`build_model`), so a chat template's added control tokens get the same embedding
        rows in both and the implicit reward starts at exactly 0.

        A ``dpo.reference`` whose vocabulary is smaller than the job's tokenizer (a template's tokens were
        added) is resized the same way, seeded; its rows for those tokens are then new, not the policy's.
        """
        import torch
        from transformers import AutoModelForCausalLM

        from orchestrator.models.build import seed_everything

        path = ctx.upstream.get("dpo.reference")
        if not path or path == ctx.model_dir:
            return self.build_model(ctx)
        ref = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        if ctx.tokenizer is not None and len(ctx.tokenizer) > ref.get_input_embeddings().num_embeddings:
            seed_everything(ctx.cfg.trainer.seed)
            ref.resize_token_embeddings(len(ctx.tokenizer), mean_resizing=False)
        return ref

    def objective(self, ctx: WorkerContext) -> Objective:
        ref = self.reference(ctx)
        ref.requires_grad_(False)
        ref.eval()
        o = ctx.cfg.dpo
        return dpo_objective(ref, o.beta, o.label_smoothing)

    def evaluate(self, engine: Any, batches: list, objective: Objective, source: Any) -> dict[str, float]:
        from orchestrator.training.loop import evaluate_pairs

        return evaluate_pairs(engine, batches, objective, METRICS)

    def sample_every(self, cfg: DPOConfig) -> int:
        return cfg.dpo.sample_every

    def sample_table(self, model: Any, ctx: WorkerContext, held_out: list, objective: Objective) -> dict[str, list]:
        """Held-out pairs with their implicit rewards and margin (``training.samples.dpo_sample_table``)."""
        from orchestrator.training.samples import dpo_sample_table

        return dpo_sample_table(model, ctx.tokenizer, held_out, objective, ctx.cfg.dpo.num_samples_logged)


def run(cfg: DPOConfig) -> Mapping[str, Any]:
    from orchestrator.training.driver import run_training

    return run_training(cfg, DPOTask())


SPEC = KindSpec(
    name="dpo", config=DPOConfig, run=run, outputs=model_output, data_format="preference",
    summary="direct preference optimisation against a frozen reference",
    model_inputs={"*": "model.pretrained"}, key_metrics=("eval_margin", "margin", "eval_accuracy", "final_loss"),
    worker_group=True,
)

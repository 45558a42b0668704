"""``reward_model``: a Bradley-Terry reward model (LM backbone + scalar head) on preference pairs.

Shared driver and worker (:mod:`orchestrator.training.driver`); this module supplies the scalar-head
model, the pairwise objective (:func:`orchestrator.rlhf.preference.bradley_terry_loss`), held-out
accuracy, and the reward mean/std stored with the export for PPO's normaliser. Reads ``data.path`` of
format ``preference``; output ``model`` (wired into ``ppo.reward_model`` downstream).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from orchestrator.config.jobs import TrainJobConfig
from orchestrator.config.rlhf import RewardOptions
from orchestrator.kinds.registry import KindSpec, model_output
from orchestrator.training.task import Objective, TrainTask, WorkerContext

METRICS = ("loss", "accuracy", "margin", "reward_mean", "reward_std")


@dataclass
class RewardModelConfig(TrainJobConfig):
    kind: str = "reward_model"
    reward: RewardOptions = field(default_factory=RewardOptions)
    """Reward-model options."""


def reward_objective(margin: float) -> Objective:
    """Bradley-Terry on the scalar at each sequence's last real token (chosen rows first, then rejected)."""
    from orchestrator.models.heads import last_token_values
    from orchestrator.rlhf.preference import bradley_terry_loss

    def objective(engine: Any, mb: dict) -> tuple[Any, dict[str, float]]:
        values = engine(input_ids=mb["input_ids"], attention_mask=mb["attention_mask"])
        r = last_token_values(values, mb["attention_mask"])
        b = r.shape[0] // 2
        loss, stats = bradley_terry_loss(r[:b], r[b:], margin)
        stats.update(reward_mean=float(r.detach().mean()), reward_std=float(r.detach().std()))
        return loss, stats

    return objective


class RewardModelTask(TrainTask):
    data_format = "preference"

    def build_model(self, ctx: WorkerContext) -> Any:
        from orchestrator.models.build import seed_everything
        from orchestrator.models.heads import ScalarHeadModel

        lm = super().build_model(ctx)
        seed_everything(ctx.cfg.trainer.seed + 1)  # the head's init is seeded too (identical on every rank)
        return ScalarHeadModel(lm, kind="reward")

    def objective(self, ctx: WorkerContext) -> Objective:
        return reward_objective(ctx.cfg.reward.margin)

    def evaluate(self, engine: Any, batches: list, objective: Objective, source: Any) -> dict[str, float]:
        from orchestrator.training.loop import evaluate_pairs

        return evaluate_pairs(engine, batches, objective, METRICS)

    def final_metrics(self, engine: Any, source: Any, ctx: WorkerContext, limit: int = 256) -> dict[str, float]:
        """Mean/std of the trained reward over (up to ``limit``) training pairs, chosen and rejected
        alike: stored with the model so PPO can standardise its scores."""
        import torch

        from orchestrator.models.heads import last_token_values
        from orchestrator.training.records import collate

        idx = source.sampler.indices[:limit]
        engine.eval()
        rewards = []
        with torch.no_grad():
            for i in range(0, len(idx), 32):
                mb = collate([ctx.encoded[int(j)] for j in idx[i:i + 32]], "preference", source.pad_id,
                             source.seq_len, False)
                out = engine(input_ids=mb["input_ids"], attention_mask=mb["attention_mask"])
                rewards.append(last_token_values(out, mb["attention_mask"]))
        engine.train()
        r = torch.cat(rewards)
        return {"reward_mean": float(r.mean()), "reward_std": float(r.std()), "reward_count": int(r.numel())}

    def export(self, engine: Any, ctx: WorkerContext, export_dir: str, final: dict[str, float]) -> None:
        """The backbone as an HF model plus the head and the reward statistics (``load_scalar_model``)."""
        from orchestrator.core.dist import barrier
        from orchestrator.core.files import copy_tokenizer
        from orchestrator.engine.export import gathered_state_dict

        state = gathered_state_dict(engine, ctx.rank)
        if ctx.rank == 0:
            module = engine.module
            if engine.zero_optimization_partition_weights():
                module = self.build_model(ctx)
                module.load_state_dict(state)
            module.save(export_dir, reward_mean=final["reward_mean"], reward_std=final["reward_std"],
                        reward_count=final["reward_count"], eval_accuracy=final.get("eval_accuracy"))
            copy_tokenizer(ctx.tokenizer_dir, export_dir)
        barrier()


def run(cfg: RewardModelConfig) -> Mapping[str, Any]:
    from orchestrator.training.driver import run_training

    return run_training(cfg, RewardModelTask())


SPEC = KindSpec(
    name="reward_model", config=RewardModelConfig, run=run, outputs=model_output, data_format="preference",
    summary="Bradley-Terry reward model on preference pairs",
    model_inputs={"*": "model.pretrained"}, key_metrics=("eval_accuracy", "accuracy", "final_loss"),
    worker_group=True,
)

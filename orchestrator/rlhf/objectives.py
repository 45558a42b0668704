"""Objectives of the post-training jobs for the shared loop: ``objective(engine, micro_batch) -> (loss, metrics)``.

* SFT: summed response-token NLL times the batch source's ``loss_scale`` (= global token mean).
* Reward model: Bradley-Terry on the scalar at each sequence's last real token.
* DPO: policy vs frozen reference sequence log-probabilities of chosen/rejected.

Preference micro-batches hold the B chosen rows first, then the B rejected rows.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.distributed as dist

from orchestrator.models.heads import last_token_values
from orchestrator.rlhf.batches import token_logprobs
from orchestrator.rlhf.preference import bradley_terry_loss, dpo_loss, sequence_logprobs

Objective = Callable[[Any, dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, float]]]


def sft_objective(engine: Any, mb: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    lp = token_logprobs(engine, mb)
    mask = mb["loss_mask"][:, 1:]
    nll = -(lp * mask).sum()
    n = mask.sum().clamp(min=1)
    return nll * mb["loss_scale"], {"token_nll": float(nll.detach() / n)}


def reward_objective(margin: float) -> Objective:
    def objective(engine: Any, mb: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        values = engine(input_ids=mb["input_ids"], attention_mask=mb["attention_mask"])
        r = last_token_values(values, mb["attention_mask"])
        b = r.shape[0] // 2
        loss, stats = bradley_terry_loss(r[:b], r[b:], margin)
        stats.update(reward_mean=float(r.detach().mean()), reward_std=float(r.detach().std()))
        return loss, stats

    return objective


def dpo_objective(reference: torch.nn.Module, beta: float, label_smoothing: float) -> Objective:
    def objective(engine: Any, mb: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        mask = mb["loss_mask"][:, 1:]
        pol = sequence_logprobs(token_logprobs(engine, mb), mask)
        with torch.no_grad():
            ref = sequence_logprobs(token_logprobs(reference, mb), mask)
        b = pol.shape[0] // 2
        return dpo_loss(pol[:b], pol[b:], ref[:b], ref[b:], beta, label_smoothing)

    return objective


PREFERENCE_METRICS = {
    "reward_model": ("loss", "accuracy", "margin", "reward_mean", "reward_std"),
    "dpo": ("loss", "accuracy", "margin", "chosen_reward", "rejected_reward"),
}


@torch.no_grad()
def evaluate_pairs(engine: Any, batches: list[dict[str, torch.Tensor]], objective: Objective,
                   names: tuple[str, ...], prefix: str = "eval_") -> dict[str, float]:
    """Pair-weighted means of the objective's loss and ``names`` metrics over held-out preference
    micro-batches, reduced over ranks (collective: every rank calls it; an empty share adds nothing)."""
    engine.eval()
    vec = torch.zeros(len(names) + 1, dtype=torch.float64)
    for mb in batches:
        loss, stats = objective(engine, mb)
        pairs = mb["input_ids"].shape[0] // 2
        values = {"loss": float(loss), **stats}
        vec[:-1] += torch.tensor([values[k] * pairs for k in names], dtype=torch.float64)
        vec[-1] += pairs
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(vec)
    engine.train()
    total = float(vec[-1])
    return {f"{prefix}{k}": float(vec[i]) / total for i, k in enumerate(names)} if total > 0 else {}

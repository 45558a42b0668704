"""The ``dpo`` job: DPO (Rafailov et al., 2023) of a policy against a frozen reference.

The loss is :func:`orchestrator.rlhf.preference.dpo_loss`; training runs on the shared engine and
loop (:mod:`orchestrator.training.posttrain_worker`), with the reference held frozen in every worker
(``dpo.reference`` or, by default, a copy of ``model.pretrained``). Held-out metrics: the implicit
reward margin ``beta * ((log pi - log ref)(y_w) - (log pi - log ref)(y_l))`` and the share of pairs it
ranks correctly, before and after training.
"""

from __future__ import annotations

from typing import Any


def run_dpo_job(cfg: Any) -> dict[str, Any]:
    from orchestrator.training.posttrain import run_posttrain

    return run_posttrain(cfg)

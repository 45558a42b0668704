"""DAPO's dynamic sampling and soft overlong punishment (Yu et al. 2025), as pure functions.

Dynamic sampling: a group whose samples all got the same reward has advantage 0 under every group
estimator, so it adds no policy gradient, only noise in the batch statistics and a smaller effective
batch. :func:`informative_groups` finds them; :class:`GroupRefill` keeps the bookkeeping of dropping
them and generating more prompts until the step has ``target_groups`` informative groups, or a cap on
refill rounds is reached (then the step trains on what it has, and says how many groups it lacked).

Overlong penalty: a response truncated at the generation budget is penalised by its length, softly in
a buffer before the budget (:func:`overlong_penalty`), so the policy learns to finish in time instead
of being punished by a cliff.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, Sequence, TypeVar

import torch

__all__ = ["informative_groups", "informative_flags", "group_reward_stats", "overlong_penalty", "GroupRefill"]

G = TypeVar("G")


def informative_groups(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """``[num_groups]`` bool: True where the group's rewards are not all equal (DAPO eq. 11's filter).

    A group of one sample has "all equal" rewards and is not informative (dynamic sampling needs
    ``group_size >= 2``; the config refuses less).
    """
    grouped = scores.detach().reshape(-1, group_size)
    return grouped.max(dim=1).values != grouped.min(dim=1).values


def group_reward_stats(scores: torch.Tensor, group_size: int) -> dict[str, float]:
    """Per-step metrics: mean within-group reward std (unbiased) and the share of zero-std groups."""
    grouped = scores.detach().float().reshape(-1, group_size)
    std = grouped.std(dim=1) if group_size > 1 else torch.zeros(grouped.shape[0])
    return {"group_reward_std": float(std.mean()),
            "zero_std_group_fraction": float((~informative_groups(scores, group_size)).float().mean())}


def overlong_penalty(lengths: torch.Tensor, max_length: int, buffer: int, factor: float = 1.0) -> torch.Tensor:
    """DAPO's soft overlong punishment (Yu et al. 2025, eq. 13), added to each sequence's reward.

    ``0`` for ``len <= max_length - buffer``; ``(max_length - buffer - len) / buffer * factor`` inside
    the buffer (reaching ``-factor`` at ``max_length``); ``-factor`` beyond it.

    Args:
        lengths: ``[B]`` response lengths in tokens.
        max_length: the generation budget (``max_new_tokens``).
        buffer: tokens before the budget where the penalty ramps up; 0 = no penalty.
        factor: the penalty at (and beyond) ``max_length``.
    """
    lengths = lengths.to(torch.float32)
    if buffer <= 0:
        return torch.zeros_like(lengths)
    assert buffer <= max_length, f"overlong buffer {buffer} exceeds the budget {max_length}"
    ramp = (max_length - buffer - lengths) / buffer * factor
    return ramp.clamp(min=-factor, max=0.0)


@dataclass
class GroupRefill(Generic[G]):
    """Bookkeeping of one step's dynamic sampling: keep informative groups, refill, stop at a cap.

    Usage: generate ``target_groups`` groups, ``add`` them with their informative flags, and while
    not ``done`` generate ``shortfall`` more (or a whole batch, as DAPO does) and ``add`` again;
    then train on ``result()``. Groups are opaque payloads (indices, records, tensors).

    Attributes:
        target_groups: informative groups a step wants (the rollout batch's prompts).
        max_refills: extra generation rounds allowed after the first; 0 = drop only, never refill.
    """

    target_groups: int
    max_refills: int
    kept: list = field(default_factory=list)
    num_rounds: int = 0
    num_generated: int = 0
    num_dropped: int = 0

    def add(self, groups: Sequence[G], informative: Sequence[bool]) -> None:
        """Record one generation round: keep the informative groups, count the dropped ones."""
        assert len(groups) == len(informative), f"{len(groups)} groups, {len(informative)} flags"
        assert not self.done, "add() after the step's sampling is done"
        self.num_rounds += 1
        self.num_generated += len(groups)
        for group, keep in zip(groups, informative):
            if bool(keep):
                self.kept.append(group)
            else:
                self.num_dropped += 1

    @property
    def shortfall(self) -> int:
        """Informative groups still missing."""
        return max(0, self.target_groups - len(self.kept))

    @property
    def done(self) -> bool:
        """Enough groups, or the refill cap is spent."""
        return self.shortfall == 0 or self.num_rounds > self.max_refills

    def result(self) -> list:
        """The first ``target_groups`` kept groups (extras from the last round are discarded, as in DAPO)."""
        return self.kept[:self.target_groups]

    def stats(self) -> dict[str, Any]:
        """Counts for MLflow: generated, dropped (all-equal) and kept groups, refill rounds, shortfall."""
        return {"groups_generated": self.num_generated, "groups_dropped": self.num_dropped,
                "groups_kept": len(self.result()), "refill_rounds": max(0, self.num_rounds - 1),
                "groups_short": self.shortfall}


def informative_flags(scores: torch.Tensor, group_size: int) -> list[bool]:
    """:func:`informative_groups` as a Python list (what :meth:`GroupRefill.add` takes)."""
    return informative_groups(scores, group_size).tolist()

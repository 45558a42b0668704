"""Group rollouts of the critic-free kinds, as pure functions: one prompt, ``group_size`` completions.

A generation round samples ``group_size`` completions for each of a batch of prompts (each prompt's
rows consecutive); :func:`split_groups` cuts the round into :class:`SampledGroup` s, dynamic sampling
(:class:`~.sampling.GroupRefill`) keeps the informative ones, :func:`choose_groups` fills a shortfall
at the refill cap, and :func:`concat_responses` rebuilds one batch from groups of several rounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from orchestrator.rlhf.rollout import pad_right

__all__ = ["SampledGroup", "repeat_rows", "round_seed", "split_groups", "choose_groups", "concat_responses",
           "response_stats", "pass_rate"]


@dataclass
class SampledGroup:
    """One prompt's completions of one round.

    Attributes:
        record: the prompt's record (``prompt`` and the fields reward functions may read).
        responses: ``[group_size, R]`` response token ids (padding after EOS).
        scores: ``[group_size]`` total reward (functions, reward model, overlong penalty).
        per_function: ``[group_size]`` scores of each reward function / the reward model.
        informative: the scores are not all equal.
    """

    record: dict[str, Any]
    responses: torch.Tensor
    scores: torch.Tensor
    per_function: dict[str, torch.Tensor]
    informative: bool


def repeat_rows(items: Sequence[Any], group_size: int) -> list[Any]:
    """Each item ``group_size`` times in a row (a prompt's samples are consecutive)."""
    return [x for x in items for _ in range(group_size)]


def round_seed(seed: int, step: int, round_index: int) -> int:
    """The generation seed of one round of one step (same on resume and recovery; distinct per round)."""
    return int(np.random.SeedSequence([seed, step, round_index]).generate_state(1)[0])


def split_groups(records: Sequence[dict[str, Any]], responses: torch.Tensor, scores: torch.Tensor,
                 per_function: dict[str, torch.Tensor], group_size: int) -> list[SampledGroup]:
    """Cut a round's ``[len(records) * group_size]`` rows into one group per record."""
    assert responses.shape[0] == scores.shape[0] == len(records) * group_size, (responses.shape, len(records))
    out = []
    for g, record in enumerate(records):
        rows = slice(g * group_size, (g + 1) * group_size)
        s = scores[rows]
        out.append(SampledGroup(record, responses[rows], s, {k: v[rows] for k, v in per_function.items()},
                                bool(s.max() != s.min())))
    return out


def choose_groups(kept: Sequence[SampledGroup], generated: Sequence[SampledGroup], target: int) -> list[SampledGroup]:
    """``target`` groups: the kept (informative) ones, then, when the refill cap left a shortfall,
    uninformative ones in generation order. Those have advantage 0 under the group estimators, so they
    add no gradient; they keep the batch (and so the minibatch arithmetic) at its configured size."""
    chosen = list(kept[:target])
    ids = {id(g) for g in chosen}
    for g in generated:
        if len(chosen) >= target:
            break
        if id(g) not in ids:
            chosen.append(g)
    return chosen


def concat_responses(groups: Sequence[SampledGroup], pad_id: int) -> torch.Tensor:
    """``[sum of group sizes, R]`` responses of groups from rounds of different lengths (right-padded).

    Padding appended to a round's responses lies after their EOS (a round shorter than the longest
    stopped because every row had ended), so the response masks do not change.
    """
    return pad_right([g.responses for g in groups], pad_id)


def response_stats(mask: torch.Tensor, responses: torch.Tensor, eos_id: int | Sequence[int],
                   max_new_tokens: int) -> dict[str, float]:
    """Mean/max response length (tokens, the stop token included) and the share truncated at
    ``max_new_tokens`` (no stop token: EOS, or any of several, e.g. a chat template's end of turn and EOS)."""
    lengths = mask.sum(dim=1)
    stops = torch.tensor([eos_id] if isinstance(eos_id, int) else list(eos_id), dtype=responses.dtype)
    has_eos = (torch.isin(responses, stops) & mask.bool()).any(dim=1)
    truncated = (~has_eos) & (lengths >= max_new_tokens)
    return {"response_length": float(lengths.float().mean()), "response_length_max": float(lengths.max()),
            "truncation_rate": float(truncated.float().mean())}


def pass_rate(per_function: dict[str, torch.Tensor]) -> float:
    """Share of completions that every reward function scored >= 1 (fully correct for 0/1 verifiers)."""
    if not per_function:
        return float("nan")
    ok = torch.stack([v >= 1.0 for v in per_function.values()]).all(dim=0)
    return float(ok.float().mean())

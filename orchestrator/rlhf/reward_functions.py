"""Built-in reward functions (``reward.functions`` entries), in the form :mod:`.rewards` calls.

* ``orchestrator.rlhf.reward_functions:fruit_reward`` - the demo task's exact score (:mod:`orchestrator.data.task`).
* ``orchestrator.rlhf.reward_functions:arithmetic_reward`` - 1 when the final number answers the
  arithmetic task's prompt (:mod:`orchestrator.data.arithmetic`).
* ``orchestrator.rlhf.reward_functions:final_number_reward`` - 1 when the final number of the
  completion equals the record's ``answer`` field (any math dataset with numeric answers, GSM8K-style).
* ``orchestrator.rlhf.reward_functions:exact_match_reward`` - 1 when the stripped completion equals
  the record's ``answer``.
"""

from __future__ import annotations

from typing import Any, Sequence

from orchestrator.data import arithmetic, task

__all__ = ["fruit_reward", "arithmetic_reward", "final_number_reward", "exact_match_reward"]


def fruit_reward(prompts: Sequence[str], completions: Sequence[str], **_: Any) -> list[float]:
    """Share of on-topic words, ``on_topic / max(num_words, k)`` (the fruit demo task)."""
    return task.score_texts(prompts, completions)


def arithmetic_reward(prompts: Sequence[str], completions: Sequence[str], **_: Any) -> list[float]:
    """1.0 when the completion's final number answers the prompt (the answer is computed from it)."""
    return arithmetic.score_texts(prompts, completions)


def final_number_reward(prompts: Sequence[str], completions: Sequence[str],  # noqa: ARG001
                        answer: Sequence[Any]) -> list[float]:
    """1.0 when the completion's last number equals ``answer`` numerically (``"19.0"`` matches 19)."""
    out = []
    for text, expected in zip(completions, answer):
        got = arithmetic.final_number(text)
        out.append(float(got is not None and expected is not None and arithmetic.numbers_equal(got, expected)))
    return out


def exact_match_reward(prompts: Sequence[str], completions: Sequence[str],  # noqa: ARG001
                       answer: Sequence[Any]) -> list[float]:
    """1.0 when the completion, stripped, equals ``str(answer)`` stripped."""
    return [float(answer_i is not None and text.strip() == str(answer_i).strip())
            for text, answer_i in zip(completions, answer)]

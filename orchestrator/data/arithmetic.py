"""The project's arithmetic task for RL on verifiable rewards (RLVR): exact match on the final number.

A prompt asks for the sum of two numbers from 0 to 4, e.g. ``compute 3+4:``; a response is correct
when the last number in it equals the answer (``7``), which gives a binary, exactly checkable reward.
Operands 0-4 (25 prompts) rather than single digits (100): the tiny model's SFT policy (2 layers, 64
wide, 400 steps) fitted the 100 single-digit sums loosely (the right answer had probability 0.28 where its
demonstrations give 0.5; a 4x batch or a 128-wide model did no better) and GRPO gained only +0.09 in 60
steps; on 25 sums an SFT policy trained with a cosine LR makes the right sum its most likely answer for
23 of them, and GRPO sharpens it (+0.16 held-out pass rate in 50 steps). Sums only: with differences
too, the right answer is the most likely one even more rarely. The checker (:func:`answer_of`) reads
``a-b`` prompts and any operands. As in the fruit task (:mod:`.task`, whose layout this module
follows), the SFT demonstrations are deliberately mediocre (correct with probability ``SFT_CORRECT`` =
0.5, otherwise off by 1 or 2), so there is clear headroom for GRPO/RLOO to raise the pass rate, and a
tiny model learns the format in seconds on CPU.

:func:`score` / :func:`score_texts` derive the answer from the prompt; :func:`final_number` and
:func:`numbers_equal` are the generic checkers behind ``orchestrator.rlhf.reward_functions``
(the reward functions live in ``rlhf``, which may import ``data``, not the other way round).
"""

from __future__ import annotations

import random
import re
from decimal import Decimal, InvalidOperation
from typing import Iterable, Optional, Sequence

MIN_OPERAND, MAX_OPERAND = 0, 4
OPERATORS = ("+",)
SFT_CORRECT = 0.5
_PROMPT_RE = re.compile(r"compute (\d+)([+-])(\d+):")
_NUMBER_RE = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?")


def make_prompt(rng: random.Random) -> tuple[str, int]:
    """A random prompt and its answer."""
    a, b = rng.randint(MIN_OPERAND, MAX_OPERAND), rng.randint(MIN_OPERAND, MAX_OPERAND)
    op = rng.choice(OPERATORS)
    return f"compute {a}{op}{b}:", a + b if op == "+" else a - b


def answer_of(prompt: str) -> Optional[int]:
    """The answer to a task prompt, or None when ``prompt`` is not one."""
    m = _PROMPT_RE.search(prompt)
    if not m:
        return None
    a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
    return a + b if op == "+" else a - b


def final_number(text: str) -> Optional[str]:
    """The last number in ``text`` (sign, thousands commas and decimals allowed), commas removed."""
    found = _NUMBER_RE.findall(text)
    return found[-1].replace(",", "") if found else None


def numbers_equal(a: object, b: object) -> bool:
    """Exact numeric equality of two numbers or numeric strings (``"19.0" == 19``); False if either is not one."""
    try:
        return Decimal(str(a).strip().replace(",", "")) == Decimal(str(b).strip().replace(",", ""))
    except (InvalidOperation, ValueError):
        return False


def score(prompt: str, response: str) -> float:
    """1.0 when the response's final number equals the prompt's answer, else 0.0 (also for unknown prompts)."""
    expected, got = answer_of(prompt), final_number(response)
    return float(expected is not None and got is not None and numbers_equal(got, expected))


def score_texts(prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
    """Batch form of :func:`score`."""
    return [score(p, r) for p, r in zip(prompts, responses)]


def sample_response(rng: random.Random, answer: int, correct: float = SFT_CORRECT) -> str:
    """`` <answer>`` with probability ``correct``, else the answer off by 1 or 2."""
    if rng.random() < correct:
        return f" {answer}"
    return f" {answer + rng.choice((-2, -1, 1, 2))}"


def sft_records(n: int, seed: int) -> list[dict]:
    """``{id, prompt, response}`` demonstrations, correct half of the time."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        prompt, answer = make_prompt(rng)
        out.append({"id": f"arith-sft-{seed}-{i}", "prompt": prompt, "response": sample_response(rng, answer)})
    return out


def preference_records(n: int, seed: int) -> list[dict]:
    """``{id, prompt, chosen, rejected}``: a correct and a wrong response."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        prompt, answer = make_prompt(rng)
        out.append({"id": f"arith-pref-{seed}-{i}", "prompt": prompt, "chosen": f" {answer}",
                    "rejected": sample_response(rng, answer, correct=0.0)})
    return out


def prompt_records(n: int, seed: int) -> list[dict]:
    """``{id, prompt, answer}`` prompts for GRPO/PPO (``answer`` as a string, as datasets store it)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        prompt, answer = make_prompt(rng)
        out.append({"id": f"arith-prompt-{seed}-{i}", "prompt": prompt, "answer": str(answer)})
    return out


RECORD_MAKERS = {"sft": sft_records, "preference": preference_records, "prompts": prompt_records}


def records(fmt: str, n: int, seed: int) -> list[dict]:
    """Task records of one post-training format (``sft``, ``preference`` or ``prompts``)."""
    return RECORD_MAKERS[fmt](n, seed)


def tokenizer_corpus() -> Iterable[str]:
    """Text covering every prompt and answer (so a BPE trained on it knows all of them)."""
    for a in range(MIN_OPERAND, MAX_OPERAND + 1):
        for b in range(MIN_OPERAND, MAX_OPERAND + 1):
            yield f"compute {a}+{b}: {a + b} compute {a}-{b}: {a - b}"

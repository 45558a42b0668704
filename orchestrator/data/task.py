"""The project's verifiable-reward demo task for post-training ("list topic words").

A prompt asks for ``k`` words of a topic, e.g. ``list 3 fruit:``. The exact score of a response is
the share of on-topic words, ``on_topic / max(num_words, k)`` in [0, 1]. The SFT demonstrations
are deliberately mediocre (each word is on-topic with probability ``SFT_ON_TOPIC`` = 0.5), so an
SFT policy scores about 0.6 and there is clear headroom for a reward model, DPO and PPO. Preference
pairs are two such responses, the higher-scoring one chosen. A tiny model learns all of this on
2 CPU cores in a minute or two.

``data_prep`` (``data.format=sft|preference|prompts`` with no input) and the tests build their demo
records here, or those of the arithmetic task (:mod:`.arithmetic`, ``data.task=arithmetic``), which
follows the same layout (:func:`task_module`); ``orchestrator.rlhf.reward_functions:fruit_reward`` is
this task's reward function (the default of ``reward.functions``).
"""

from __future__ import annotations

import random
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Iterable, Sequence

TOPICS: dict[str, tuple[str, ...]] = {
    "fruit": ("apple", "banana", "cherry", "grape", "lemon", "mango", "peach", "plum"),
    "animal": ("cat", "dog", "horse", "mouse", "tiger", "zebra", "camel", "eagle"),
    "color": ("red", "blue", "green", "yellow", "purple", "black", "white", "pink"),
    "tool": ("hammer", "saw", "drill", "wrench", "chisel", "pliers", "shovel", "rake"),
}
ALL_WORDS: tuple[str, ...] = tuple(w for ws in TOPICS.values() for w in ws)
MIN_K, MAX_K = 2, 4
SFT_ON_TOPIC = 0.5
_PROMPT_RE = re.compile(r"list (\d+) (\w+):")


def make_prompt(rng: random.Random) -> tuple[str, str, int]:
    """A random prompt and its (topic, k)."""
    topic = rng.choice(sorted(TOPICS))
    k = rng.randint(MIN_K, MAX_K)
    return f"list {k} {topic}:", topic, k


def sample_response(rng: random.Random, topic: str, k: int, on_topic: float = SFT_ON_TOPIC) -> str:
    """``k`` words, each from ``topic`` with probability ``on_topic`` else from the whole vocabulary."""
    words = [rng.choice(TOPICS[topic]) if rng.random() < on_topic else rng.choice(ALL_WORDS) for _ in range(k)]
    return " " + " ".join(words)


def parse_prompt(prompt: str) -> tuple[str, int] | None:
    """``(topic, k)`` of the last request in ``prompt``: a rendered conversation holds every earlier
    user turn too, and the response answers the last one."""
    found = _PROMPT_RE.findall(prompt)
    if not found or found[-1][1] not in TOPICS:
        return None
    return found[-1][1], int(found[-1][0])


def score(prompt: str, response: str) -> float:
    """Exact reward of one response: ``on_topic / max(num_words, k)``; 0 for an unknown prompt."""
    parsed = parse_prompt(prompt)
    if parsed is None:
        return 0.0
    topic, k = parsed
    words = re.findall(r"[a-z]+", response.lower())
    on = sum(1 for w in words if w in TOPICS[topic])
    return on / max(len(words), k)


def score_texts(prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
    """Batch form of :func:`score`."""
    return [score(p, r) for p, r in zip(prompts, responses)]


def sft_records(n: int, seed: int) -> list[dict]:
    """``{id, prompt, response}`` demonstrations of mediocre quality."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        prompt, topic, k = make_prompt(rng)
        out.append({"id": f"sft-{seed}-{i}", "prompt": prompt, "response": sample_response(rng, topic, k)})
    return out


def preference_records(n: int, seed: int) -> list[dict]:
    """``{id, prompt, chosen, rejected}`` pairs of SFT-like responses; the higher score is chosen."""
    rng = random.Random(seed)
    out: list[dict] = []
    while len(out) < n:
        prompt, topic, k = make_prompt(rng)
        a, b = sample_response(rng, topic, k), sample_response(rng, topic, k)
        sa, sb = score(prompt, a), score(prompt, b)
        if sa == sb:
            continue
        chosen, rejected = (a, b) if sa > sb else (b, a)
        out.append({"id": f"pref-{seed}-{len(out)}", "prompt": prompt, "chosen": chosen, "rejected": rejected})
    return out


def prompt_records(n: int, seed: int) -> list[dict]:
    """``{id, prompt, topic, k}`` prompts for PPO."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        prompt, topic, k = make_prompt(rng)
        out.append({"id": f"prompt-{seed}-{i}", "prompt": prompt, "topic": topic, "k": k})
    return out


CHAT_SYSTEM = "Answer with topic words only."
#: Malformed conversations planted by :func:`chat_records` (``bad=True``), by the quarantine reason they get.
BAD_CONVERSATIONS = {
    "unknown_role": [{"role": "robot", "content": "list 2 fruit:"}, {"role": "assistant", "content": " plum"}],
    "no_assistant": [{"role": "user", "content": "list 2 fruit:"}],
    "empty_content": [{"role": "user", "content": "list 2 fruit:"}, {"role": "assistant", "content": "  "}],
    "tool_without_call": [{"role": "user", "content": "list 2 fruit:"}, {"role": "tool", "content": "plum"},
                          {"role": "assistant", "content": " plum"}],
}


def chat_records(n: int, seed: int, max_turns: int = 3, on_topic: float = 1.0, bad: bool = False) -> list[dict]:
    """Multi-turn ``{id, messages}`` conversations of the task: a system message, then 1..``max_turns``
    exchanges ``list k topic:`` / ``k`` words; every reply is scoreable with :func:`score`. ``bad`` appends
    one record per :data:`BAD_CONVERSATIONS` entry (ids ``bad-<reason>``)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        msgs = [{"role": "system", "content": CHAT_SYSTEM}]
        for _ in range(rng.randint(1, max_turns)):
            prompt, topic, k = make_prompt(rng)
            msgs += [{"role": "user", "content": prompt},
                     {"role": "assistant", "content": sample_response(rng, topic, k, on_topic).strip()}]
        out.append({"id": f"chat-{seed}-{i}", "messages": msgs})
    if bad:
        out += [{"id": f"bad-{reason}", "messages": msgs} for reason, msgs in BAD_CONVERSATIONS.items()]
    return out


_ASK = {"role": "user", "content": "list 2 fruit:"}
#: Malformed preference records planted by :func:`chat_preference_records` (``bad=True``), by their reason.
BAD_PREFERENCES = {
    "unknown_role": {"messages": [{"role": "robot", "content": "list 2 fruit:"}], "chosen": "plum pear",
                     "rejected": "red cat"},
    "empty_content": {"messages": [_ASK], "chosen": "plum pear", "rejected": "  "},
    "no_assistant": {"messages": [_ASK], "chosen": [{"role": "user", "content": "plum pear"}], "rejected": "red cat"},
    "tool_without_call": {"messages": [_ASK, {"role": "tool", "content": "plum"}], "chosen": "plum pear",
                          "rejected": "red cat"},
    "identical_pair": {"chosen": [_ASK, {"role": "assistant", "content": "plum pear"}],
                       "rejected": [_ASK, {"role": "assistant", "content": "plum pear"}]},
}
#: Malformed prompt conversations planted by :func:`chat_prompt_records` (``bad=True``), by their reason.
BAD_PROMPTS = {
    "unknown_role": [{"role": "robot", "content": "list 2 fruit:"}],
    "empty_content": [{"role": "system", "content": CHAT_SYSTEM}, {"role": "user", "content": " "}],
    "no_user": [{"role": "system", "content": CHAT_SYSTEM}],
    "tool_without_call": [_ASK, {"role": "tool", "content": "plum"}],
}


def _history(rng: random.Random, turns: int) -> list[dict]:
    """A system message and ``turns`` exchanges with on-topic replies."""
    msgs = [{"role": "system", "content": CHAT_SYSTEM}]
    for _ in range(turns):
        prompt, topic, k = make_prompt(rng)
        msgs += [{"role": "user", "content": prompt},
                 {"role": "assistant", "content": sample_response(rng, topic, k, 1.0).strip()}]
    return msgs


def chat_preference_records(n: int, seed: int, max_turns: int = 3, bad: bool = False) -> list[dict]:
    """Multi-turn preference pairs: a conversation (system, 0..``max_turns - 1`` earlier exchanges, a last
    request), the chosen reply all on-topic (score 1), the rejected one all off-topic (score 0). Even
    records give ``chosen``/``rejected`` as whole conversations, odd ones as reply strings beside the
    shared ``messages`` (both input forms). ``bad`` appends :data:`BAD_PREFERENCES` (ids ``bad-<reason>``)."""
    rng = random.Random(seed)
    out: list[dict] = []
    for i in range(n):
        msgs = _history(rng, rng.randint(0, max_turns - 1))
        prompt, topic, k = make_prompt(rng)
        msgs.append({"role": "user", "content": prompt})
        chosen = sample_response(rng, topic, k, 1.0).strip()
        others = [w for t, ws in TOPICS.items() if t != topic for w in ws]
        rejected = " ".join(rng.choice(others) for _ in range(k))
        if i % 2 == 0:
            out.append({"id": f"chatpref-{seed}-{i}", "chosen": msgs + [{"role": "assistant", "content": chosen}],
                        "rejected": msgs + [{"role": "assistant", "content": rejected}]})
        else:
            out.append({"id": f"chatpref-{seed}-{i}", "messages": msgs, "chosen": chosen, "rejected": rejected})
    if bad:
        out += [{"id": f"bad-{reason}", **rec} for reason, rec in BAD_PREFERENCES.items()]
    return out


def chat_prompt_records(n: int, seed: int, max_turns: int = 3, bad: bool = False) -> list[dict]:
    """Conversation prompts: :func:`chat_records` conversations, whose last assistant reply (a reference
    answer) ``data_prep`` removes for ``data.format=prompts``; ``bad`` appends :data:`BAD_PROMPTS`."""
    out = chat_records(n, seed, max_turns=max_turns)
    if bad:
        out += [{"id": f"bad-{reason}", "messages": msgs} for reason, msgs in BAD_PROMPTS.items()]
    return out


RECORD_MAKERS = {"sft": sft_records, "preference": preference_records, "prompts": prompt_records}


def records(fmt: str, n: int, seed: int) -> list[dict]:
    """Demo records of one post-training format (``sft``, ``preference`` or ``prompts``)."""
    return RECORD_MAKERS[fmt](n, seed)


def tokenizer_corpus() -> Iterable[str]:
    """Text covering every prompt and word of the task (to train a tokenizer where each word is a token)."""
    for topic in TOPICS:
        for k in range(MIN_K, MAX_K + 1):
            yield f"list {k} {topic}: " + " ".join(ALL_WORDS)


def task_module(name: str) -> ModuleType:
    """The module of a generated task (``data.task``): ``fruit`` (this one) or ``arithmetic``. Each has
    ``records(fmt, n, seed)``, ``prompt_records``, ``score_texts`` and ``tokenizer_corpus()``."""
    if name == "fruit":
        return sys.modules[__name__]
    if name == "arithmetic":
        from orchestrator.data import arithmetic

        return arithmetic
    raise ValueError(f"unknown generated task {name!r} (fruit or arithmetic)")


def ensure_task_dataset(workspace: str | Path, fmt: str, num_records: int = 2000, seed: int = 0,
                        tokenizer_dir: str | Path | None = None, vocab_size: int = 512, task: str = "fruit") -> Path:
    """Build (once) and return a records dataset of a generated task (``fruit`` or ``arithmetic``, see
    :func:`task_module`) under ``<workspace>/demo_data``.

    ``tokenizer_dir`` null trains a byte-level BPE on the task's text (each task word becomes one
    token); pass the upstream model's tokenizer to stay compatible with it. Built in a temporary
    directory and renamed into place, so concurrent callers never see half a dataset.
    """
    import hashlib
    import shutil

    from orchestrator.core.files import build_once, copy_tokenizer
    from orchestrator.data.shards import MANIFEST, write_records_dataset
    from orchestrator.data.tokenizer import train_bpe_tokenizer

    tok_key = hashlib.sha256(str(Path(tokenizer_dir).resolve()).encode()).hexdigest()[:8] if tokenizer_dir else "own"
    prefix = "task" if task == "fruit" else task  # the fruit task keeps the directories it always had
    if task == "arithmetic":  # the operand range is part of the data: a changed range must not reuse old data
        from orchestrator.data.arithmetic import MAX_OPERAND, MIN_OPERAND

        prefix = f"{prefix}{MIN_OPERAND}to{MAX_OPERAND}"
    target = Path(workspace) / "demo_data" / f"{prefix}-{fmt}-n{num_records}-seed{seed}-tok{tok_key}"
    module = task_module(task)

    def build(tmp: Path) -> None:
        tok = tmp / "tokenizer_src"
        if tokenizer_dir:  # tokenizer files only: a model directory also holds its weights
            copy_tokenizer(tokenizer_dir, tok)
        else:
            train_bpe_tokenizer(list(module.tokenizer_corpus()) * 4, vocab_size, tok)
        write_records_dataset(tmp, fmt, module.records(fmt, num_records, seed), tokenizer_dir=tok,
                              source={"generator": module.__name__, "seed": seed})
        shutil.rmtree(tok, ignore_errors=True)

    return build_once(target, build, MANIFEST)

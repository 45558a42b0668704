"""The project's own demo data: a small, learnable generated corpus (no downloads anywhere).

Used by ``data_prep`` when ``data.input`` is null and by training jobs when ``data.path`` is null
(smoke runs). Sentences come from a tiny grammar with strong regularities (agreement, counting,
arithmetic), so a tiny model's loss falls visibly within a few dozen steps.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Iterator

import numpy as np

from orchestrator.core.files import build_once
from orchestrator.data.shards import MANIFEST, write_packed_dataset

ADJECTIVES = ["small", "quiet", "bright", "old", "green", "careful", "happy", "heavy", "gentle", "clever"]
NOUNS = ["river", "teacher", "garden", "robot", "village", "painter", "window", "engine", "forest", "student"]
VERBS = ["watches", "follows", "repairs", "paints", "visits", "answers", "builds", "finds", "helps", "moves"]
NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


def _sentence(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.55:
        return (f"The {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} {rng.choice(VERBS)} "
                f"the {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}.")
    if kind < 0.8:
        a, b = rng.randint(0, 5), rng.randint(0, 5)
        return f"{NUMBERS[a].capitalize()} plus {NUMBERS[b]} is {NUMBERS[a + b]}."
    start = rng.randint(0, 5)
    return "Counting: " + " ".join(NUMBERS[start:start + 5]) + "."


def demo_documents(num_docs: int, seed: int = 0, sentences_per_doc: tuple[int, int] = (12, 30)) -> Iterator[str]:
    """Generated English-like documents (long enough to pass the Gopher word-count rule)."""
    rng = random.Random(seed)
    for _ in range(num_docs):
        yield " ".join(_sentence(rng) for _ in range(rng.randint(*sentences_per_doc)))


def pack_tokens(token_lists: Iterator[list[int]], seq_len: int) -> Iterator[np.ndarray]:
    """Concatenate documents (each already ending in EOS) and cut them into seq_len blocks; the
    last partial block is dropped (standard packing, no padding)."""
    buf: list[int] = []
    for ids in token_lists:
        buf.extend(ids)
        n = len(buf) // seq_len
        if n:
            yield np.asarray(buf[: n * seq_len], dtype=np.int64).reshape(n, seq_len)
            buf = buf[n * seq_len:]


def ensure_demo_dataset(workspace: str | Path, seq_len: int = 64, vocab_size: int = 512, seed: int = 0,
                        num_docs: int = 400) -> Path:
    """Build (once) and return a packed demo dataset under ``<workspace>/demo_data``.

    Built in a temporary directory and renamed into place, so concurrent callers never see half a
    dataset.
    """
    from orchestrator.data.tokenizer import encode_documents, special_token_ids, train_bpe_tokenizer

    target = Path(workspace) / "demo_data" / f"pretrain-s{seq_len}-v{vocab_size}-seed{seed}-n{num_docs}"

    def build(tmp: Path) -> None:
        docs = list(demo_documents(num_docs, seed))
        tok_dir = train_bpe_tokenizer(docs, vocab_size, tmp / "tokenizer")
        ids = encode_documents(tok_dir, docs)  # no transformers import in the driver (issue #13)
        write_packed_dataset(
            tmp, pack_tokens(ids, seq_len), seq_len=seq_len, vocab_size=vocab_size, **special_token_ids(tok_dir),
            tokenizer_dir=tok_dir, source={"generator": "orchestrator.data.demo", "seed": seed, "num_docs": num_docs},
        )

    return build_once(target, build, MANIFEST)

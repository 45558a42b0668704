"""The raw input of a data_prep run: the user's files, or the generated demo input (``data.input=null``)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Iterator

from orchestrator.config.data_prep import DataPrepDataConfig
from orchestrator.config.errors import ConfigError
from orchestrator.data.corpus import demo_raw_records, write_jsonl
from orchestrator.data.readers import Partition, plan_partitions

DEMO_SEED = 0


def demo_record_lines(fmt: str, num_records: int, seed: int = DEMO_SEED, task: str = "fruit") -> Iterator[Any]:
    """Demo post-training records of a generated verifiable task (``fruit``: :mod:`orchestrator.data.task`,
    ``arithmetic``: :mod:`orchestrator.data.arithmetic`) with 3 % planted exact copies and a few malformed
    lines, shuffled."""
    from orchestrator.data.task import task_module

    rng = random.Random(seed)
    recs: list[Any] = list(task_module(task).records(fmt, num_records, seed))
    recs += [dict(rng.choice(recs), id=f"copy-{j}") for j in range(max(1, num_records * 3 // 100))]
    rng.shuffle(recs)
    for bad in (b'{"id": "broken", "prompt": "list 2', {"id": "no-prompt", "response": " red"}, b"\xff\xfe"):
        recs.insert(rng.randrange(len(recs)), bad)
    yield from recs


def ensure_demo_input(output_dir: str | Path, cfg: DataPrepDataConfig) -> Path:
    """Write (once) the demo raw input for ``cfg.format`` under ``<output_dir>/raw``; returns its path."""
    task = "" if cfg.format == "pretrain" or cfg.task == "fruit" else f"-{cfg.task}"
    path = Path(output_dir) / "raw" / f"demo-{cfg.format}{task}-n{cfg.demo_num_docs}.jsonl"
    if path.exists():
        return path
    tmp = path.with_suffix(".tmp")
    lines = (demo_raw_records(cfg.demo_num_docs, DEMO_SEED) if cfg.format == "pretrain"
             else demo_record_lines(cfg.format, cfg.demo_num_docs, task=cfg.task))
    write_jsonl(tmp, lines)
    tmp.replace(path)
    return path


def resolve_partitions(output_dir: str | Path, cfg: DataPrepDataConfig) -> tuple[str, list[Partition]]:
    """The input pattern and its partitions.

    Raises:
        ConfigError: the input holds no readable file, or only empty files.
    """
    pattern = cfg.input if cfg.input is not None else str(ensure_demo_input(output_dir, cfg))
    parts = plan_partitions(pattern, cfg.input_format, cfg.partition_kb << 10, cfg.on_bad_file)
    if all(Path(p.path).stat().st_size == 0 for p in parts):
        raise ConfigError("data.input", f"{pattern!r} is empty (no records to prepare)",
                          "point data.input at non-empty files, or leave it null for the demo corpus")
    return pattern, parts

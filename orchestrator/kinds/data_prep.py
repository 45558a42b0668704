"""``data_prep``: raw text to a deduplicated, filtered, tokenized dataset on Ray Data.

Steps, outputs and thresholds: :mod:`orchestrator.data.job` and ``orchestrator/config/data_prep.py``.
Output ``dataset`` (``<output_dir>/dataset``: manifest + digest) is wired into downstream training stages
whose data format matches ``data.format``.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from orchestrator.config.data_prep import DataPrepDataConfig
from orchestrator.config.errors import require
from orchestrator.config.jobs import JobConfig
from orchestrator.core.files import is_remote_uri
from orchestrator.data.shards import MANIFEST
from orchestrator.kinds.registry import KindSpec


@dataclass
class DataPrepConfig(JobConfig):
    kind: str = "data_prep"
    data: DataPrepDataConfig = field(default_factory=DataPrepDataConfig)
    """Input, filters, dedup, tokenizer and packing."""


def check(cfg: DataPrepConfig) -> None:
    d = cfg.data
    if d.input is not None and not is_remote_uri(d.input):
        require(bool(glob.glob(d.input)) or Path(d.input).exists(), "data.input",
                f"{d.input!r} matches no file", "give an existing file, directory or glob")
    if d.tokenizer_path is not None:
        require(Path(d.tokenizer_path).is_dir(), "data.tokenizer_path", f"{d.tokenizer_path!r} is not a directory",
                "point to a tokenizer directory or leave it null to train one")
    if d.chat_template is not None:
        from orchestrator.data.chat_template import load_chat_template

        require(d.format != "pretrain", "data.chat_template", "conversations exist only in records formats",
                "set data.format=sft|preference|prompts or leave data.chat_template null")
        load_chat_template(d.chat_template)  # ConfigError: neither Jinja text nor a file


def lsh_detection_curve(num_bands: int, rows_per_band: int,
                        points: tuple[float, ...] = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)) -> dict[float, float]:
    """P(a pair becomes an LSH candidate | Jaccard s) at a few similarities (the dry-run curve)."""
    from orchestrator.data.minhash import detection_probability

    return {s: round(detection_probability(s, num_bands, rows_per_band), 4) for s in points}


def plan(cfg: DataPrepConfig) -> dict[str, Any]:
    from orchestrator.data.dedup import near_dedup_plan

    mh = cfg.data.minhash
    return {
        "minhash_permutations": mh.num_bands * mh.rows_per_band,
        "lsh_threshold_estimate": round((1 / mh.num_bands) ** (1 / mh.rows_per_band), 4),
        "lsh_detection_probability": lsh_detection_curve(mh.num_bands, mh.rows_per_band),
        **near_dedup_plan(cfg.data),  # verification, its cost, shuffle bytes per document, docs per bucket
        "workers": cfg.cluster.num_workers,
    }


def run(cfg: DataPrepConfig) -> Mapping[str, Any]:
    from orchestrator.data.job import run_data_prep

    return run_data_prep(cfg)


def outputs(result: Mapping[str, Any], output_dir: str) -> dict[str, str]:
    """``dataset``: the directory holding the manifest."""
    path = result.get("dataset_dir") or result.get("output_dir") or str(Path(output_dir) / "dataset")
    if not (Path(path) / MANIFEST).exists() and (Path(path) / "dataset" / MANIFEST).exists():
        path = str(Path(path) / "dataset")
    return {"dataset": str(path)}


SPEC = KindSpec(
    name="data_prep", config=DataPrepConfig, run=run, check=check, plan=plan, outputs=outputs,
    summary="filter, deduplicate, tokenize and pack raw text (Ray Data)",
    key_metrics=("docs_kept", "num_kept", "num_blocks"),
)

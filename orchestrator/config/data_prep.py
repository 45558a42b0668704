"""``data`` group for the ``data_prep`` job: raw text in, filtered/deduplicated/packed dataset out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from orchestrator.config.base import Frozen
from orchestrator.config.errors import require

INPUT_FORMATS = ("auto", "jsonl", "parquet", "hf")
OUTPUT_FORMATS = ("pretrain", "sft", "preference", "prompts")


@dataclass
class MinHashConfig(Frozen):
    enabled: bool = True
    """Near-duplicate removal with MinHash + LSH."""
    num_bands: int = 14
    """LSH bands b; P(candidate | Jaccard s) = 1 - (1 - s^r)^b."""
    rows_per_band: int = 8
    """Rows r per band; b*r hash permutations in all (14x8 = 112, ~0.72 threshold at 50%)."""
    ngram: int = 5
    """Word n-gram size of the shingles."""
    threshold: float = 0.8
    """Candidate pairs are verified: kept as duplicates only if estimated Jaccard >= this."""
    seed: int = 42
    """Seed of the hash permutations (same seed = same signatures across runs)."""

    def __post_init__(self) -> None:
        for name in ("num_bands", "rows_per_band", "ngram"):
            require(getattr(self, name) >= 1, f"data.minhash.{name}", "must be >= 1", "set a value >= 1")
        require(0 < self.threshold <= 1, "data.minhash.threshold", "must be in (0, 1]", "use e.g. 0.8")


@dataclass
class DataPrepDataConfig(Frozen):
    input: Optional[str] = None
    """Path or glob of JSONL (.gz/.zst), Parquet, or a local HF datasets dir; null = generate the
    project's demo corpus (with planted duplicates and malformed lines) under the output dir."""
    input_format: str = "auto"
    """``auto`` (by extension), ``jsonl``, ``parquet`` or ``hf``."""
    format: str = "pretrain"
    """What to produce: ``pretrain`` (packed token blocks), ``sft``, ``preference`` or ``prompts``."""
    id_field: str = "id"
    """Record id field; generated (stable hash of file + line) when absent, always preserved."""
    text_field: str = "text"
    """Field holding the document text."""
    output: Optional[str] = None
    """Where to write the dataset; null = ``<output_dir>/dataset``."""
    seq_len: int = 64
    """Packed block length in tokens (the pipeline sets it to model.seq_len)."""
    vocab_size: int = 512
    """Vocabulary of the byte-level BPE tokenizer trained when ``tokenizer_path`` is null."""
    tokenizer_path: Optional[str] = None
    """Existing tokenizer directory to use instead of training one."""
    minhash: MinHashConfig = field(default_factory=MinHashConfig)
    """Near-duplicate detection settings."""

    def __post_init__(self) -> None:
        require(self.input_format in INPUT_FORMATS, "data.input_format", f"unknown {self.input_format!r}",
                f"use one of {', '.join(INPUT_FORMATS)}")
        require(self.format in OUTPUT_FORMATS, "data.format", f"unknown {self.format!r}",
                f"use one of {', '.join(OUTPUT_FORMATS)}")
        require(self.seq_len >= 8, "data.seq_len", "must be >= 8", "use e.g. data.seq_len=64")
        require(self.vocab_size >= 259, "data.vocab_size", "a byte-level BPE needs >= 259 entries",
                "use e.g. data.vocab_size=512")

"""On-disk dataset formats shared by ``data_prep`` (writer) and the training jobs (readers).

Layout of a dataset directory::

    manifest.json        written last: its presence marks the dataset complete
    tokenizer/           Hugging Face fast tokenizer (``AutoTokenizer.from_pretrained``)
    shards/*.npy         format "pretrain": [num_blocks, seq_len] token ids (uint16/uint32), memory-mapped
    records.jsonl        formats "sft" {id, prompt, response}, "preference" {id, prompt, chosen,
                         rejected}, "prompts" {id, prompt, ...}; or in chat form, message lists:
                         "sft" {id, messages}, "preference"/"prompts" with list-valued fields

The manifest's ``digest`` is a sha256 over the format, the shape and every file's sha256, so two
datasets with the same digest hold the same tokens (it is what MLflow lineage records).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

import numpy as np

from orchestrator.core.dataset import MANIFEST, load_manifest

FORMAT_VERSION = 1
RECORD_FORMATS = ("sft", "preference", "prompts")
REQUIRED_FIELDS = {"sft": ("prompt", "response"), "preference": ("prompt", "chosen", "rejected"),
                   "prompts": ("prompt",)}
CHAT_FIELDS = {"sft": ("messages",), "preference": ("prompt", "chosen", "rejected"), "prompts": ("prompt",)}
"""Fields of a chat record (message lists; see :mod:`orchestrator.data.chat_records`)."""


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            h.update(chunk)
    return h.hexdigest()


def _digest(fmt: str, shape: dict[str, Any], file_hashes: list[str]) -> str:
    h = hashlib.sha256(json.dumps({"format": fmt, **shape}, sort_keys=True).encode())
    for fh in file_hashes:
        h.update(fh.encode())
    return h.hexdigest()


def _write_json_atomic(path: Path, obj: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
    os.replace(tmp, path)


def _copy_tokenizer(tokenizer_dir: Optional[Path], out: Path) -> Optional[str]:
    """Copy the tokenizer next to the data; returns the sha256 of tokenizer.json (part of the digest)."""
    if tokenizer_dir is None:
        return None
    dst = out / "tokenizer"
    if Path(tokenizer_dir).resolve() != dst.resolve():
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(tokenizer_dir, dst)
    tok_json = dst / "tokenizer.json"
    return sha256_file(tok_json) if tok_json.exists() else None


def write_packed_dataset(
    out_dir: str | Path,
    blocks: Iterable[np.ndarray],
    *,
    seq_len: int,
    vocab_size: int,
    eos_token_id: int,
    pad_token_id: Optional[int] = None,
    bos_token_id: Optional[int] = None,
    tokenizer_dir: Optional[str | Path] = None,
    source: Optional[dict[str, Any]] = None,
    blocks_per_shard: int = 8192,
) -> dict[str, Any]:
    """Write fixed-length token blocks as ``.npy`` shards plus the manifest (written last).

    Args:
        blocks: arrays of shape [n, seq_len] (any n, including 1-D arrays of one block).
        source: provenance recorded in the manifest (input digest, step stats, ...).
    Returns:
        The manifest.
    """
    out = Path(out_dir)
    shard_dir = out / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # incomplete until the new manifest lands
    dtype = np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32
    shards: list[dict[str, Any]] = []
    pending: list[np.ndarray] = []
    pending_rows = 0

    def flush() -> None:
        nonlocal pending, pending_rows
        if not pending_rows:
            return
        arr = np.concatenate(pending).astype(dtype, copy=False)
        path = shard_dir / f"shard-{len(shards):05d}.npy"
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, arr)
        os.replace(tmp, path)
        shards.append({"path": f"shards/{path.name}", "num_blocks": int(arr.shape[0]), "sha256": sha256_file(path)})
        pending, pending_rows = [], 0

    for block in blocks:
        block = np.asarray(block).reshape(-1, seq_len)
        if block.size and int(block.max()) >= vocab_size:
            raise ValueError(f"token id {int(block.max())} >= vocab_size {vocab_size}")
        pending.append(block)
        pending_rows += block.shape[0]
        if pending_rows >= blocks_per_shard:
            flush()
    flush()
    for stale in shard_dir.glob("shard-*.npy"):
        if f"shards/{stale.name}" not in {s["path"] for s in shards}:
            stale.unlink()
    tok_hash = _copy_tokenizer(Path(tokenizer_dir) if tokenizer_dir else None, out)
    num_blocks = sum(s["num_blocks"] for s in shards)
    shape = {"seq_len": seq_len, "vocab_size": vocab_size, "dtype": np.dtype(dtype).name, "num_blocks": num_blocks}
    manifest = {
        "format": "pretrain", "version": FORMAT_VERSION, **shape, "num_tokens": num_blocks * seq_len,
        "eos_token_id": eos_token_id, "pad_token_id": pad_token_id, "bos_token_id": bos_token_id,
        "tokenizer": "tokenizer" if tok_hash or tokenizer_dir else None, "shards": shards,
        "digest": _digest("pretrain", shape, [s["sha256"] for s in shards] + ([tok_hash] if tok_hash else [])),
        "source": source or {},
    }
    _write_json_atomic(out / MANIFEST, manifest)
    return manifest


class PackedDataset:
    """Random access to the blocks of a packed dataset (memory-mapped, cheap to open per worker)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.manifest = load_manifest(self.path)
        if self.manifest.get("format") != "pretrain":
            raise ValueError(f"{path} is a {self.manifest.get('format')!r} dataset, not packed pretraining data")
        self.seq_len: int = self.manifest["seq_len"]
        self._arrays = [np.load(self.path / s["path"], mmap_mode="r") for s in self.manifest["shards"]]
        self._offsets = np.cumsum([0] + [a.shape[0] for a in self._arrays])

    @property
    def digest(self) -> str:
        return self.manifest["digest"]

    @property
    def tokenizer_dir(self) -> Optional[Path]:
        tok = self.manifest.get("tokenizer")
        return self.path / tok if tok else None

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def __getitem__(self, index: int) -> np.ndarray:
        if not 0 <= index < len(self):
            raise IndexError(index)
        shard = int(np.searchsorted(self._offsets, index, side="right") - 1)
        return np.asarray(self._arrays[shard][index - self._offsets[shard]], dtype=np.int64)


def write_records_dataset(
    out_dir: str | Path,
    fmt: str,
    records: Iterable[dict[str, Any]],
    *,
    tokenizer_dir: Optional[str | Path] = None,
    source: Optional[dict[str, Any]] = None,
) -> dict[str, Any]:
    """Write sft/preference/prompts records as JSONL plus the manifest (written last)."""
    if fmt not in RECORD_FORMATS:
        raise ValueError(f"unknown record format {fmt!r}; use one of {RECORD_FORMATS}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)
    path = out / "records.jsonl"
    tmp = out / "records.jsonl.tmp"
    count = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for rec in records:
            chat = isinstance(rec.get("messages"), list) or isinstance(rec.get("prompt"), list)
            missing = [k for k in ("id", *(CHAT_FIELDS if chat else REQUIRED_FIELDS)[fmt]) if k not in rec]
            if missing:
                raise ValueError(f"{fmt} record {rec.get('id', count)!r} lacks {missing}")
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            count += 1
    os.replace(tmp, path)
    file_hash = sha256_file(path)
    tok_hash = _copy_tokenizer(Path(tokenizer_dir) if tokenizer_dir else None, out)
    shape = {"num_records": count}
    manifest = {
        "format": fmt, "version": FORMAT_VERSION, **shape,
        "files": [{"path": path.name, "sha256": file_hash}],
        "tokenizer": "tokenizer" if tok_hash or tokenizer_dir else None,
        "digest": _digest(fmt, shape, [file_hash] + ([tok_hash] if tok_hash else [])),
        "source": source or {},
    }
    _write_json_atomic(out / MANIFEST, manifest)
    return manifest


def iter_records(path: str | Path) -> Iterator[dict[str, Any]]:
    """Stream the records of a sft/preference/prompts dataset."""
    manifest = load_manifest(path)
    for entry in manifest["files"]:
        with open(Path(path) / entry["path"], encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """All records of a sft/preference/prompts dataset."""
    return list(iter_records(path))

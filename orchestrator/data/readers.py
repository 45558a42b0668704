"""Input discovery, partitioning and record parsing with quarantine.

A partition is the unit of work (one Ray task) and of rerun bookkeeping: a byte range of an
uncompressed JSONL file, a whole compressed JSONL file, a Parquet row group, or an Arrow file of a
local Hugging Face ``datasets`` directory. Records that cannot be parsed are yielded as quarantine
entries (never raised), so one bad line never fails a job.
"""

from __future__ import annotations

import glob
import gzip
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import xxhash

from orchestrator.config.errors import ConfigError

JSONL_EXT = (".jsonl", ".json", ".ndjson")
COMPRESSED_EXT = (".gz", ".zst")
PARQUET_EXT = (".parquet",)
ARROW_EXT = (".arrow",)
MAX_QUARANTINE_CHARS = 2000


@dataclass(frozen=True)
class Partition:
    """One unit of input."""

    index: int
    path: str
    kind: str
    """``jsonl`` (byte range), ``jsonl_compressed``, ``parquet`` (row group) or ``arrow``."""
    start: int = 0
    """Byte offset (jsonl) or row group (parquet)."""
    end: int = -1
    """Byte end (jsonl, exclusive); -1 = to the end."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Parsed:
    """A record, or a quarantine entry when ``error`` is set."""

    source: str
    offset: int
    record: Optional[dict[str, Any]] = None
    error: Optional[str] = None
    raw: Optional[str] = None
    records_read: Optional[int] = None
    """For ``error='unreadable_file'``: the partition's records (and quarantined lines) read before the damage."""


UNREADABLE = "unreadable_file"


def _read_errors() -> tuple[type[BaseException], ...]:
    """What a damaged file raises while it is read: truncated or corrupt gzip/zstd streams, Parquet
    and Arrow files that are not what their name says, I/O errors."""
    import zlib

    import pyarrow as pa
    import zstandard

    return (OSError, EOFError, ValueError, zlib.error, zstandard.ZstdError, pa.ArrowException)


def _kind_of(path: Path, input_format: str) -> Optional[str]:
    name = path.name.lower()
    if input_format in ("jsonl", "auto") and name.endswith(tuple(e + c for e in JSONL_EXT for c in COMPRESSED_EXT)):
        return "jsonl_compressed"
    if input_format in ("jsonl", "auto") and name.endswith(JSONL_EXT):
        return "jsonl"
    if input_format in ("parquet", "auto") and name.endswith(PARQUET_EXT):
        return "parquet"
    if input_format in ("hf", "auto") and name.endswith(ARROW_EXT):
        return "arrow"
    return None


def is_hf_dataset_dir(path: Path) -> bool:
    return path.is_dir() and any((path / n).exists() for n in ("state.json", "dataset_dict.json", "dataset_info.json"))


def discover_files(pattern: str, input_format: str = "auto") -> list[tuple[Path, str]]:
    """Input files (sorted) and their kinds for a path, directory or glob.

    Raises:
        ConfigError: nothing readable matches.
    """
    matches = sorted(glob.glob(pattern)) or ([pattern] if Path(pattern).exists() else [])
    files: list[tuple[Path, str]] = []
    for m in map(Path, matches):
        candidates = sorted(p for p in m.rglob("*") if p.is_file()) if m.is_dir() else [m]
        fmt = "hf" if m.is_dir() and is_hf_dataset_dir(m) and input_format == "auto" else input_format
        for p in candidates:
            kind = _kind_of(p, fmt)
            if kind is None and input_format == "jsonl" and not m.is_dir():
                kind = "jsonl"  # explicit format: trust the user about the extension
            if kind:
                files.append((p, kind))
    if not files:
        raise ConfigError("data.input", f"{pattern!r} contains no readable input (JSONL[.gz|.zst], Parquet, "
                          "or a Hugging Face datasets directory)", "point data.input at such files")
    return files


def unreadable_file_error(path: str, error: str, records_read: int) -> ConfigError:
    """The one-line error of ``data.on_bad_file=fail``."""
    return ConfigError("data.input", f"{path} is damaged or unreadable ({error}; {records_read} records read "
                       "before the damage)", "repair or remove the file, or set data.on_bad_file=quarantine "
                       "to keep its readable records and process the other files")


def _parquet_row_groups(path: Path, on_bad_file: str) -> int:
    """Row groups of a Parquet file; a file whose footer cannot be read is one partition that stage 1
    quarantines (or, under ``fail``, an error before Ray starts)."""
    import pyarrow.parquet as pq

    try:
        return max(pq.ParquetFile(path).num_row_groups, 1)
    except _read_errors() as e:
        if on_bad_file == "fail":
            raise unreadable_file_error(str(path), f"{type(e).__name__}: {e}", 0) from None
        return 1


def plan_partitions(pattern: str, input_format: str, partition_bytes: int,
                    on_bad_file: str = "quarantine") -> list[Partition]:
    """Split the inputs into partitions (deterministic order: sorted files, then offsets).

    Raises:
        ConfigError: nothing readable matches, or (``on_bad_file='fail'``) a Parquet footer is unreadable.
    """
    parts: list[Partition] = []
    for path, kind in discover_files(pattern, input_format):
        if kind == "jsonl":
            size = path.stat().st_size
            for start in range(0, max(size, 1), partition_bytes):
                parts.append(Partition(len(parts), str(path), kind, start, min(start + partition_bytes, size)))
        elif kind == "parquet":
            for rg in range(_parquet_row_groups(path, on_bad_file)):
                parts.append(Partition(len(parts), str(path), kind, rg, rg + 1))
        else:
            parts.append(Partition(len(parts), str(path), kind))
    return parts


def _zstd_chunks(path: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
    """Decompressed chunks of a (multi-frame) zstd file. Unlike ``stream_reader``, which ends quietly
    at a cut, a stream that stops inside a frame raises EOFError (as gzip does)."""
    import zstandard

    dctx = zstandard.ZstdDecompressor()
    dobj = dctx.decompressobj()
    in_frame = False
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            while chunk:
                out = dobj.decompress(chunk)
                in_frame = True
                if out:
                    yield out
                if not dobj.eof:
                    break
                chunk, dobj, in_frame = dobj.unused_data, dctx.decompressobj(), False
    if in_frame:
        raise EOFError("zstd stream ended before the end of its frame (truncated file)")


def _compressed_lines(path: str) -> Iterator[bytes]:
    if path.endswith(".gz"):
        with gzip.open(path, "rb") as f:
            yield from f
        return
    rest = b""
    for chunk in _zstd_chunks(path):
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        for line in lines:
            yield line + b"\n"
    if rest:
        yield rest


def _jsonl_lines(part: Partition) -> Iterator[tuple[int, bytes]]:
    """(byte offset, line) of the lines whose first byte lies in the partition's range."""
    if part.kind == "jsonl_compressed":
        offset = 0
        for line in _compressed_lines(part.path):
            yield offset, line
            offset += len(line)
        return
    with open(part.path, "rb") as f:
        pos = part.start
        if pos > 0:
            f.seek(pos - 1)
            if f.read(1) != b"\n":  # mid-line: that line belongs to the previous partition
                pos += len(f.readline())
        f.seek(pos)
        while pos < part.end:
            line = f.readline()
            if not line:
                break
            yield pos, line
            pos += len(line)


def parse_jsonl_line(source: str, offset: int, line: bytes) -> Optional[Parsed]:
    """A parsed JSON object, a quarantine entry, or None for a blank line."""
    stripped = line.strip()
    if not stripped:
        return None
    try:
        text = stripped.decode("utf-8")
    except UnicodeDecodeError:
        return Parsed(source, offset, error="non_utf8", raw=stripped[:MAX_QUARANTINE_CHARS].decode("utf-8", "replace"))
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return Parsed(source, offset, error="bad_json", raw=text[:MAX_QUARANTINE_CHARS])
    if not isinstance(obj, dict):
        return Parsed(source, offset, error="not_an_object", raw=text[:MAX_QUARANTINE_CHARS])
    return Parsed(source, offset, record=obj)


def _table_records(part: Partition) -> Iterator[tuple[int, dict[str, Any]]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    row = 0
    if part.kind == "parquet":
        batches: Any = pq.ParquetFile(part.path).iter_batches(row_groups=[part.start], batch_size=4096)
    else:
        with open(part.path, "rb") as f:
            try:
                reader = pa.ipc.open_stream(f)
            except pa.ArrowInvalid:
                f.seek(0)
                reader = pa.ipc.open_file(f)
                batches = [reader.get_batch(i) for i in range(reader.num_record_batches)]
            else:
                batches = list(reader)
    for batch in batches:
        for rec in batch.to_pylist():
            yield row, rec
            row += 1


def _read_partition(part: Partition) -> Iterator[Parsed]:
    if part.kind in ("jsonl", "jsonl_compressed"):
        for offset, line in _jsonl_lines(part):
            parsed = parse_jsonl_line(part.path, offset, line)
            if parsed is not None:
                yield parsed
    else:
        for row, rec in _table_records(part):
            yield Parsed(part.path, row if part.kind == "arrow" else (part.start << 32) | row, record=rec)


def read_partition(part: Partition) -> Iterator[Parsed]:
    """Every record (or quarantine entry) of a partition, streamed.

    A damaged file (truncated gzip/zstd stream, corrupt Parquet or Arrow data, I/O error) ends the
    stream with one ``unreadable_file`` entry instead of an exception: the records read before the
    damage stand, ``offset`` is where reading stopped (bytes of decompressed JSONL, or rows) and
    ``raw`` the error. Nothing is retried: a damaged file stays damaged.
    """
    count = 0
    offset = part.start if part.kind == "jsonl" else 0
    try:
        for parsed in _read_partition(part):
            count += 1
            offset = parsed.offset
            yield parsed
    except _read_errors() as e:
        yield Parsed(part.path, offset, error=UNREADABLE, raw=f"{type(e).__name__}: {e}"[:MAX_QUARANTINE_CHARS],
                     records_read=count)


def generated_id(source: str, offset: int) -> str:
    """Stable id of a record without one: hash of the file name and the record's offset."""
    return "doc-" + xxhash.xxh64_hexdigest(f"{os.path.basename(source)}:{offset}".encode())


def extract_fields(parsed: Parsed, id_field: str, fields: tuple[str, ...]) -> Parsed:
    """Check the required text fields; sets ``error='missing_text'`` (or ``missing_<field>``) when one is
    absent, not a string, or empty. Adds a generated id when the record has none."""
    rec = parsed.record
    assert rec is not None
    for name in fields:
        value = rec.get(name)
        if not isinstance(value, str) or not value.strip():
            kind = "missing_text" if len(fields) == 1 else f"missing_{name}"
            return Parsed(parsed.source, parsed.offset, error=kind, raw=json.dumps(rec, ensure_ascii=False, default=str)[:MAX_QUARANTINE_CHARS])
    if rec.get(id_field) is None:
        rec = {id_field: generated_id(parsed.source, parsed.offset), **rec}
    else:
        rec = {**rec, id_field: str(rec[id_field])}
    return Parsed(parsed.source, parsed.offset, record=rec)

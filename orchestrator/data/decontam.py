"""Decontamination: remove training documents that share a word n-gram with evaluation text.

A document goes (step ``decontaminate``, reason ``decontaminated``, the benchmark and the n-gram in the
removal manifest) when any of its word n-grams (13 by default, as GPT-3, Brown et al. 2020, App. C)
also occurs in the evaluation text given by ``data.decontaminate``. Words are normalised on both sides
(NFKC, case-folded, runs of word characters), so case, spacing, punctuation and line breaks do not
hide a match, and a passage embedded in other text is found wherever it is.

The index is built before stage 1 as Ray Data tasks, with memory bounded like the dedup shuffles:
one task per evaluation file hashes its n-grams and appends them to ``num_shards`` shard files by
hash; one task per shard sorts and deduplicates its hashes (``shard-J.hashes.npy``, uint64, with the
benchmark of each in ``shard-J.bench.npy``). Stage-1 tasks memory-map the shards and look every
document's n-gram hashes up by binary search, so neither side holds the whole evaluation set.
"""

from __future__ import annotations

import glob
import hashlib
import json
import re
import unicodedata
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import xxhash

from orchestrator.config.data_prep import DecontaminateConfig
from orchestrator.config.errors import ConfigError

WORD_RE = re.compile(r"\w+")
_MULT = np.uint64(0x100000001B3)  # polynomial rolling hash of the word hashes (mod 2^64)
_MIX = np.uint64(0x9E3779B97F4A7C15)
BYTES_PER_GRAM = 10  # hash + benchmark id, for sizing the shards
DATA_EXT = (".jsonl", ".json", ".ndjson", ".parquet", ".gz", ".zst", ".arrow")


def eval_words(text: str) -> list[str]:
    """The normalised words n-grams are made of: NFKC, case-folded, runs of word characters."""
    return WORD_RE.findall(unicodedata.normalize("NFKC", text).casefold())


def gram_hashes(words: list[str], n: int) -> np.ndarray:
    """64-bit hash of every word n-gram, in text order (empty when there are fewer than n words)."""
    if len(words) < n:
        return np.empty(0, np.uint64)
    wh = np.fromiter((xxhash.xxh64_intdigest(w.encode()) for w in words), np.uint64, len(words))
    count = len(words) - n + 1
    acc = np.zeros(count, np.uint64)
    with np.errstate(over="ignore"):
        for k in range(n):
            acc = acc * _MULT + wh[k:k + count]
        acc ^= acc >> np.uint64(31)
        return acc * _MIX


def benchmark_name(path: str) -> str:
    """A file's name without its data extensions (``mmlu-test.jsonl.gz`` -> ``mmlu-test``)."""
    name = Path(path).name
    while name.lower().endswith(DATA_EXT):
        name = name[: name.rfind(".")]
    return name


def eval_sources(cfg: DecontaminateConfig) -> list[tuple[str, str]]:
    """(file, benchmark) of every evaluation file; a Hugging Face datasets dir is one benchmark named
    after the directory."""
    from orchestrator.data.readers import discover_files

    out: list[tuple[str, str]] = []
    for pattern in cfg.paths:
        for m in sorted(glob.glob(pattern)) or [pattern]:
            for path, _ in discover_files(m):
                out.append((str(path), Path(m).name if Path(m).is_dir() else benchmark_name(str(path))))
    return out


def eval_fingerprint(cfg: DecontaminateConfig) -> list[Any]:
    """What the index depends on: settings, and every evaluation file's path, size and mtime."""
    if not (cfg.enabled and cfg.paths):
        return []
    stamps = [(f, b, Path(f).stat().st_size, int(Path(f).stat().st_mtime)) for f, b in eval_sources(cfg)]
    return [cfg.ngram, list(cfg.text_fields), stamps]


def _texts(record: dict[str, Any], fields: list[str]) -> Iterator[str]:
    for f in fields:
        value = record.get(f)
        for v in (value if isinstance(value, list) else [value]):
            if isinstance(v, str) and v.strip():
                yield v


def _scatter_eval_file(path: str, bench: int, out: str, ngram: int, fields: list[str], num_shards: int,
                       flush_grams: int = 1 << 20) -> dict[str, Any]:
    """Hash one evaluation file's n-grams into per-shard chunk files; counts what it indexed."""
    from orchestrator.data.readers import UNREADABLE, plan_partitions, read_partition

    pending: list[np.ndarray] = []
    counts = {"texts": 0, "short_texts": 0, "grams": 0, "chunks": 0}

    def flush() -> None:
        if not pending:
            return
        g = np.concatenate(pending)
        pending.clear()
        shard = (g % np.uint64(num_shards)).astype(np.int64)
        for j in np.unique(shard).tolist():
            d = Path(out) / "scatter" / f"s={j}"
            d.mkdir(parents=True, exist_ok=True)
            np.save(d / f"{bench:04d}-{xxhash.xxh64_hexdigest(path.encode())}-{counts['chunks']:05d}.npy", g[shard == j])
        counts["chunks"] += 1

    for part in plan_partitions(path, "auto", 1 << 62):
        for parsed in read_partition(part):
            if parsed.error == UNREADABLE:
                raise ConfigError("data.decontaminate.paths", f"{path} is damaged ({parsed.raw})",
                                  "repair the evaluation file or remove it from data.decontaminate.paths")
            for text in _texts(parsed.record or {}, fields):
                g = gram_hashes(eval_words(text), ngram)
                counts["texts"] += 1
                counts["short_texts"] += not len(g)
                counts["grams"] += len(g)
                pending.append(g)
            if sum(map(len, pending)) >= flush_grams:
                flush()
    flush()
    return counts


def _merge_shard(shard: int, out: str) -> dict[str, Any]:
    """Sort and deduplicate one shard's hashes; the first benchmark (in ``paths`` order) owns a shared one."""
    files = sorted((Path(out) / "scatter" / f"s={shard}").glob("*.npy"))
    Path(out).mkdir(parents=True, exist_ok=True)
    chunks = [(np.load(f), int(f.name[:4])) for f in files]  # file names start with the benchmark id
    hashes = np.concatenate([c for c, _ in chunks] + [np.empty(0, np.uint64)])
    bench = np.concatenate([np.full(len(c), b, np.uint16) for c, b in chunks] + [np.empty(0, np.uint16)])
    order = np.lexsort((bench, hashes))
    hashes, bench = hashes[order], bench[order]
    first = np.r_[True, hashes[1:] != hashes[:-1]] if len(hashes) else np.empty(0, bool)
    np.save(Path(out) / f"shard-{shard:04d}.hashes.npy", hashes[first])
    np.save(Path(out) / f"shard-{shard:04d}.bench.npy", bench[first])
    return {"grams": int(first.sum())}


def build_index(cfg: DecontaminateConfig, work: Path, shard_mb: int, num_shards: Optional[int] = None,
                run: Optional[Callable[..., list[dict[str, Any]]]] = None) -> Optional[dict[str, Any]]:
    """Build (once per evaluation set and settings) the n-gram index under ``work/decontam``; returns
    its metadata, or None when decontamination is off.

    Args:
        shard_mb: target MiB of hashes per shard (bounds a merge task's memory).
        num_shards: fixed number of shards instead.
        run: runs ``fn`` over items as :func:`orchestrator.data.shuffle.map_tasks` does (default: that,
            i.e. Ray Data tasks; tests pass an in-process loop).
    Raises:
        ConfigError: a damaged evaluation file, or no evaluation text of at least ``ngram`` words.
    """
    import shutil

    from orchestrator.data.partition import atomic_write_text
    from orchestrator.data.shuffle import map_tasks

    run = run or map_tasks
    if not (cfg.enabled and cfg.paths):
        return None
    out = work / "decontam"
    key = hashlib.sha256(json.dumps(eval_fingerprint(cfg)).encode()).hexdigest()
    meta_path = out / "index.json"
    if meta_path.exists() and json.loads(meta_path.read_text())["key"] == key:
        return json.loads(meta_path.read_text())
    shutil.rmtree(out, ignore_errors=True)
    sources = eval_sources(cfg)
    names = sorted(set(b for _, b in sources), key=[b for _, b in sources].index)
    size = sum(Path(f).stat().st_size for f, _ in sources)
    num_shards = num_shards or max(1, -(-size * BYTES_PER_GRAM // 5 // (shard_mb << 20)))  # ~5 bytes a word
    counts = run(_scatter_eval_file, [{"path": f, "bench": names.index(b)} for f, b in sources], out=str(out),
                       ngram=cfg.ngram, fields=list(cfg.text_fields), num_shards=num_shards)
    merged = run(_merge_shard, [{"shard": j} for j in range(num_shards)], out=str(out))
    shutil.rmtree(out / "scatter", ignore_errors=True)
    meta = {"key": key, "benchmarks": names, "ngram": cfg.ngram, "num_shards": num_shards,
            "texts": sum(c["texts"] for c in counts), "short_texts": sum(c["short_texts"] for c in counts),
            "grams": sum(m["grams"] for m in merged)}
    if meta["grams"] == 0:
        raise ConfigError("data.decontaminate.paths", f"no evaluation text of >= {cfg.ngram} words in fields "
                          f"{list(cfg.text_fields)}", "check data.decontaminate.text_fields and the files")
    atomic_write_text(meta_path, json.dumps(meta))
    return meta


class DecontMatcher:
    """Looks a document's n-grams up in the memory-mapped index shards."""

    def __init__(self, directory: str | Path) -> None:
        directory = Path(directory)
        self.meta = json.loads((directory / "index.json").read_text())
        self.n = int(self.meta["ngram"])
        self.shards = [(np.load(directory / f"shard-{j:04d}.hashes.npy", mmap_mode="r"),
                        np.load(directory / f"shard-{j:04d}.bench.npy", mmap_mode="r"))
                       for j in range(self.meta["num_shards"])]

    def match(self, text: str) -> Optional[tuple[str, str]]:
        """(benchmark, n-gram) of the first of the document's n-grams found in the index, else None."""
        words = eval_words(text)
        g = gram_hashes(words, self.n)
        if not len(g):
            return None
        shard = (g % np.uint64(len(self.shards))).astype(np.int64)
        first: Optional[tuple[int, int]] = None  # (position in the text, benchmark id)
        for j in np.unique(shard).tolist():
            hashes, bench = self.shards[j]
            if not len(hashes):
                continue
            pos = np.flatnonzero(shard == j)
            idx = np.minimum(np.searchsorted(hashes, g[pos]), len(hashes) - 1)
            hit = np.flatnonzero(hashes[idx] == g[pos])
            if len(hit) and (first is None or pos[hit[0]] < first[0]):
                first = (int(pos[hit[0]]), int(bench[idx[hit[0]]]))
        if first is None:
            return None
        return self.meta["benchmarks"][first[1]], " ".join(words[first[0]:first[0] + self.n])

"""``data_prep``: raw text -> normalised, filtered, PII-scrubbed, deduplicated, tokenized dataset.

Stages (each rerunnable: completion markers under ``<output_dir>/work``; a rerun skips what is done
and an interrupted run continues where it stopped):

1. per input partition (Ray Data map): parse (bad records quarantined), normalise, filters, PII,
   exact key and MinHash signature;
2. exact and near dedup as file-backed shuffles on Ray Data (:mod:`orchestrator.data.dedup`);
3. per partition: kept documents and the removal manifest;
4. tokenizer (trained when ``data.tokenizer_path`` is null), tokenization per partition (Ray Data
   map), packing into ``data.seq_len`` blocks, or the sft/preference/prompts records.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from orchestrator.config.base import as_dict
from orchestrator.config.errors import ConfigError
from orchestrator.core.console import say
from orchestrator.core.timing import Phases, one_line, record_startup
from orchestrator.data import dedup
from orchestrator.data.chat_records import is_chat_record
from orchestrator.data.decontam import build_index, eval_fingerprint
from orchestrator.data.finalize import (canonical_fields, finalize_partition, iter_kept, pack_arrays,
                                        tokenize_partition)
from orchestrator.data.inputs import resolve_partitions
from orchestrator.data.partition import check_bad_files, part_name, process_partition
from orchestrator.data.readers import Partition
from orchestrator.data.shuffle import map_tasks
from orchestrator.data.stats import aggregate_step_stats, plot_filter_histograms, stats_metrics
from orchestrator.data.steps import DocumentSteps

if TYPE_CHECKING:  # the kind module imports this one to run it
    from orchestrator.kinds.data_prep import DataPrepConfig

log = logging.getLogger(__name__)


def _fingerprint(cfg: DataPrepConfig, parts: list[Partition]) -> str:
    """What the work directory's results depend on: the data settings and the input files."""
    files = sorted({p.path for p in parts})
    stamp = [(f, Path(f).stat().st_size, int(Path(f).stat().st_mtime)) for f in files]
    data = {k: v for k, v in as_dict(cfg.data).items() if k not in ("output", "plots", "on_bad_file")}
    evals = eval_fingerprint(cfg.data.decontaminate)  # issue 19: a changed evaluation set redoes stage 1
    return hashlib.sha256(json.dumps([data, stamp, [p.as_dict() for p in parts]] + ([evals] if evals else []),
                                     sort_keys=True, default=str).encode()).hexdigest()


def _prepare_work(cfg: DataPrepConfig, work: Path, fingerprint: str) -> None:
    """Keep the work directory only when it belongs to the same inputs and settings."""
    fp = work / "fingerprint"
    if work.exists() and (cfg.resume == "never" or not fp.exists() or fp.read_text() != fingerprint):
        log.warning("data_prep: discarding %s (inputs or settings changed, or resume=never)", work)
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    fp.write_text(fingerprint)


def _stage1(parts: list[Partition], cfg: DataPrepConfig, work: Path) -> list[dict[str, Any]]:
    todo = [p for p in parts if not (work / "stage1" / "done" / part_name(p.index)).exists()]
    log.info("data_prep stage 1: %d partitions (%d already done)", len(todo), len(parts) - len(todo))
    map_tasks(_stage1_task, [{"part": p.as_dict()} for p in todo], cfg=cfg.data, work=str(work))
    done_before = {p.index for p in parts} - {p.index for p in todo}
    return [json.loads((work / "stage1" / "stats" / f"{part_name(p.index)}.json").read_text())
            | {"skipped": p.index in done_before} for p in parts]


def _stage1_task(part: dict[str, Any], cfg: Any, work: str) -> dict[str, Any]:
    return process_partition(Partition(**part), cfg, work)


def _stage2(parts: list[Partition], cfg: DataPrepConfig, work: Path, num_docs: int) -> dict[str, Any]:
    d = cfg.data
    files = [str(work / "stage1" / "docs" / f"{part_name(p.index)}.parquet") for p in parts]
    result: dict[str, Any] = {}
    for step, enabled in (("exact", d.exact_dedup.enabled), ("near", d.minhash.enabled)):
        marker = work / "dedup" / f"{step}.done"
        if not enabled:
            continue
        if marker.exists():
            result[step] = json.loads(marker.read_text())
            continue
        out = work / "dedup" / step  # kept on an interruption: its finished shuffle tasks are skipped
        if step == "exact":
            result[step] = {"removed": dedup.run_exact_dedup(files, out, num_docs, d.shuffle_partition_mb,
                                                             d.shuffle_partitions)}
        else:
            result[step] = dedup.run_near_dedup(files, out, num_docs, d.minhash, d.shuffle_partition_mb,
                                                d.shuffle_partitions)
        marker.write_text(json.dumps(result[step]))
        for scratch in (out.iterdir() if out.exists() else []):  # only the removals are read later
            if scratch.name != "removals":
                shutil.rmtree(scratch, ignore_errors=True)
    return result


def _tokenizer(cfg: DataPrepConfig, work: Path, out: Path) -> Path:
    d = cfg.data
    if d.tokenizer_path:
        return Path(d.tokenizer_path)
    from orchestrator.data.tokenizer import train_bpe_tokenizer

    tok_dir = work / "tokenizer"
    if (tok_dir / "done").exists():
        return tok_dir
    texts = (t for rec in iter_kept(out) for t in _record_texts(rec, d.format, d.text_field))
    train_bpe_tokenizer(texts, d.vocab_size, tok_dir)
    (tok_dir / "done").write_text("done\n")
    return tok_dir


def _record_texts(rec: dict[str, Any], fmt: str, text_field: str) -> list[str]:
    """The texts of a kept record a tokenizer is trained on (every message content of a chat record)."""
    if fmt == "pretrain":
        return [str(rec[text_field])]
    if is_chat_record(rec, fmt):
        return [m["content"] for k in ("messages", "prompt", "chosen", "rejected") for m in rec.get(k) or ()]
    return [str(rec[n]) for n in canonical_fields(fmt)]


def _chat_tokenizer(cfg: DataPrepConfig, tok_dir: Path, work: Path, out: Path) -> Path:
    """``tok_dir`` itself, or a copy carrying the chat template when the records hold conversations
    (or ``data.chat_template`` is set): the tokenizer's own template, the override, else the default."""
    from orchestrator.data.tokenizer import load_tokenizer
    from orchestrator.data.chat_template import ChatTemplateError, ensure_chat_template

    d = cfg.data
    if d.chat_template is None and not any(is_chat_record(r, d.format) for r in iter_kept(out)):
        return tok_dir
    tok = load_tokenizer(str(tok_dir))
    try:
        ensure_chat_template(tok, d.chat_template)
    except ChatTemplateError as e:
        raise ConfigError("data.chat_template", str(e), "use a template that renders each turn on its own and "
                          "closes assistant turns with an end-of-turn marker (or leave it null)") from e
    dst = work / "chat_tokenizer"
    shutil.rmtree(dst, ignore_errors=True)
    tok.save_pretrained(str(dst))
    return dst


def _build_dataset(cfg: DataPrepConfig, parts: list[Partition], work: Path, out: Path, dataset_dir: Path,
                   source: dict[str, Any]) -> dict[str, Any]:
    from orchestrator.data.tokenizer import load_tokenizer
    from orchestrator.data.shards import write_packed_dataset, write_records_dataset

    d = cfg.data
    tok_dir = _tokenizer(cfg, work, out)
    if d.format != "pretrain":
        return write_records_dataset(dataset_dir, d.format, iter_kept(out), tokenizer_dir=_chat_tokenizer(
            cfg, tok_dir, work, out), source=source)
    tok = load_tokenizer(str(tok_dir))
    eos = tok.eos_token_id
    if eos is None:
        raise ConfigError("data.tokenizer_path", "the tokenizer has no EOS token", "use a tokenizer with an eos_token")
    tok_json = tok_dir / "tokenizer.json"
    map_tasks(tokenize_partition, [{"index": p.index} for p in parts],
              tokenizer_json=str(tok_json), eos_id=int(eos), text_field=d.text_field, work=str(work), out=str(out))
    import numpy as np

    streams = (np.load(work / "tokens" / f"{part_name(p.index)}.npy", mmap_mode="r") for p in parts)
    return write_packed_dataset(dataset_dir, pack_arrays(streams, d.seq_len), seq_len=d.seq_len, vocab_size=len(tok),
                                eos_token_id=int(eos), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                                tokenizer_dir=tok_dir, source=source)


def _merge_quarantine(parts: list[Partition], work: Path, out: Path) -> Path:
    path = out / "quarantine.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for p in parts:
            f.write((work / "stage1" / "quarantine" / f"{part_name(p.index)}.jsonl").read_text(encoding="utf-8"))
    return path


DATA_PHASES = ("decontam_index", "filter", "dedup", "finalize", "dataset", "ray_stop", "plots")
"""data_prep's phases after its start-up (inputs, tracking_start, ray_start), in the ``startup.*`` breakdown."""


def _run_stages(cfg: DataPrepConfig, pattern: str, parts: list[Partition], work: Path, out: Path,
                dataset_dir: Path, fingerprint: str, run_id: Optional[str],
                phases: Phases) -> tuple[dict[str, Any], dict[str, Any]]:
    d = cfg.data
    with phases.phase("decontam_index"):
        build_index(d.decontaminate, work, d.shuffle_partition_mb)  # issue 19: n-gram index of the eval sets
    with phases.phase("filter"):
        s1 = _stage1(parts, cfg, work)
    check_bad_files(s1, d.on_bad_file)  # issue 19: damaged files are quarantined, or fail with one line
    num_docs = sum(s["docs_in"] for s in s1)
    if num_docs == 0:
        _merge_quarantine(parts, work, out)
        bad = sum(sum(s["quarantined"].values()) for s in s1)
        raise ConfigError("data.input", f"{pattern!r} holds no usable record ({bad} quarantined, see "
                          f"{out / 'quarantine.jsonl'})" if bad else f"{pattern!r} holds no records",
                          f"check data.text_field={d.text_field!r}, data.format and the file contents")
    with phases.phase("dedup"):
        dedup_result = _stage2(parts, cfg, work, sum(s["docs_out"] for s in s1))
    with phases.phase("finalize"):
        s3 = map_tasks(finalize_partition, [{"index": p.index} for p in parts], cfg=d, work=str(work), out=str(out))
    stats = aggregate_step_stats(DocumentSteps(d).enabled_steps(), s1, s3)
    stats["dedup"] = dedup_result
    stats["partitions"] = {"total": len(parts), "stage1_skipped": sum(bool(s.get("skipped")) for s in s1),
                           "stage3_skipped": sum(bool(s.get("skipped")) for s in s3)}
    _merge_quarantine(parts, work, out)
    if stats["docs_kept"] == 0:
        raise ConfigError("data", "every document was removed by the filters (see the removals/ manifest)",
                          "relax the thresholds or disable steps (e.g. data.c4.enabled=false)")
    source = {"input": pattern, "fingerprint": fingerprint, "docs_in": stats["docs_in"],
              "docs_kept": stats["docs_kept"], "run_id": run_id}
    with phases.phase("dataset"):
        manifest = _build_dataset(cfg, parts, work, out, dataset_dir, source)
    for k in ("num_tokens", "num_blocks", "num_records"):
        if k in manifest:
            stats[k] = manifest[k]
    stats["digest"] = manifest["digest"]
    return stats, manifest


def run_data_prep(cfg: DataPrepConfig) -> dict[str, Any]:
    """Run the whole data_prep job; returns output dir, dataset dir, manifest digest, per-step counts
    and the MLflow run id.

    Raises:
        ConfigError: empty or unreadable input, or every document removed.
    """
    from orchestrator.runtime.ray_runtime import ray_session

    phases = Phases()
    d = cfg.data
    if d.plots:
        from orchestrator.runtime.preload import import_in_background

        import_in_background("matplotlib.figure")  # ~0.6 s, while the driver waits on the filter tasks
    with phases.phase("inputs"):
        out = Path(cfg.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        work = out / "work"
        dataset_dir = Path(d.output) if d.output else out / "dataset"
        pattern, parts = resolve_partitions(out, d)
        fingerprint = _fingerprint(cfg, parts)
        _prepare_work(cfg, work, fingerprint)
    tracker = None
    if cfg.tracking.enabled:
        from orchestrator.tracking import JobTracker

        with phases.phase("tracking_start"):
            tracker = JobTracker.start(cfg)
    with tracker if tracker is not None else contextlib.nullcontext():
        with contextlib.ExitStack() as session:
            with phases.phase("ray_start"):
                session.enter_context(ray_session(cfg.cluster))
            stats, manifest = _run_stages(cfg, pattern, parts, work, out, dataset_dir, fingerprint,
                                          tracker.run_id if tracker else None, phases)
            t_stop = time.perf_counter()
        phases.add("ray_stop", time.perf_counter() - t_stop)
        (out / "stats.json").write_text(json.dumps(stats, indent=2))
        plot = None
        if d.plots:
            with phases.phase("plots"):
                plot = plot_filter_histograms(sorted(str(p) for p in (work / "stage1" / "filterstats").glob("*.parquet")),
                                              out / "plots")
        startup = record_startup(out, phases.seconds, DATA_PHASES)
        if tracker is not None:
            _log_to_mlflow(tracker, stats, out, plot, dataset_dir)
            tracker.log_metrics(startup, step=0)
    say(f"data_prep: {sum(phases.seconds.values()):.1f}s ({one_line(phases.seconds, 6)})")
    steps = {s["step"]: {"in": s["docs_in"], "out": s["docs_out"]} for s in stats["steps"]}
    log.info("data_prep: %d documents in, %d kept, %d quarantined; dataset %s (digest %s)",
             stats["docs_in"], stats["docs_kept"], stats["quarantined"], dataset_dir, manifest["digest"][:12])
    return {"output_dir": str(out), "dataset_dir": str(dataset_dir), "manifest_digest": manifest["digest"],
            "steps": steps, "docs_in": stats["docs_in"], "docs_kept": stats["docs_kept"],
            "quarantined": stats["quarantined"], "bad_files": stats["bad_files"], "run_id": tracker.run_id if tracker else None,
            "stats_path": str(out / "stats.json"), "startup": startup}


def _log_to_mlflow(tracker: Any, stats: dict[str, Any], out: Path, plot: Optional[Path], dataset_dir: Path) -> None:
    """Metrics, stats and plots, and the produced dataset as a run input (digest) for lineage."""
    tracker.log_metrics({f"data_prep.{k}": v for k, v in stats_metrics(stats).items()}, step=0)
    tracker.log_artifact(out / "stats.json", "data_prep")
    if plot is not None:
        tracker.log_artifact(plot, "data_prep/plots")
    tracker.log_dataset(dataset_dir, context="output")

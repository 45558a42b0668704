"""What every post-training job does before and after training: resolve the upstream model (local
path or MLflow URI) and its tokenizer, find or build the records dataset, open the MLflow run, and
export the result as a Hugging Face directory with lineage tags."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Any, Iterator, Optional

from orchestrator.config.errors import ConfigError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


class NullTracker:
    """Stands in for :class:`~orchestrator.tracking.JobTracker` when ``tracking.enabled=false``."""

    run_id: Optional[str] = None
    client = None

    def log_metrics(self, metrics: dict, step: int) -> None:
        return None

    def set_tags(self, tags: dict) -> None:
        return None

    def log_dataset(self, *args: Any, **kwargs: Any) -> None:
        return None

    def log_artifact(self, *args: Any, **kwargs: Any) -> None:
        return None

    def log_dict(self, *args: Any, **kwargs: Any) -> None:
        return None

    def register_model(self, *args: Any, **kwargs: Any) -> None:
        return None


@contextlib.contextmanager
def job_tracker(cfg: Any) -> Iterator[Any]:
    """The job's MLflow run (ended FINISHED/FAILED/KILLED by the context), or a no-op tracker."""
    if not cfg.tracking.enabled:
        yield NullTracker()
        return
    from orchestrator.tracking import JobTracker

    with JobTracker.start(cfg) as tracker:
        yield tracker


def resolve_model(uri: Optional[str], cfg: Any, key: str) -> Optional[str]:
    """Local directory of an upstream model: a path as is, a ``models:/``/``runs:/`` URI downloaded."""
    if uri is None:
        return None
    from orchestrator.config.validate import is_remote_uri

    if is_remote_uri(uri):
        import mlflow

        from orchestrator.models.build import resolve_pretrained

        mlflow.set_tracking_uri(cfg.tracking.uri)
        return resolve_pretrained(uri, str(Path(cfg.output_dir) / "upstream" / key.replace(".", "_")))
    if not (Path(uri) / "config.json").is_file():
        raise ConfigError(key, f"{uri!r} holds no Hugging Face model (config.json)",
                          "point to the export directory of an upstream job, or a models:/ or runs:/ URI")
    return str(Path(uri).resolve())


def has_tokenizer(path: Optional[str | Path]) -> bool:
    return path is not None and (Path(path) / "tokenizer.json").is_file()


def dataset_dir(cfg: Any, fmt: str, tokenizer_dir: Optional[str]) -> Path:
    """``data.path`` (checked to hold a records dataset of ``fmt``), or the demo task's dataset."""
    from orchestrator.data.shards import load_manifest

    if cfg.data.path is None:
        from orchestrator.rlhf.task import ensure_task_dataset

        return ensure_task_dataset(cfg.workspace, fmt, seed=cfg.trainer.seed, tokenizer_dir=tokenizer_dir)
    manifest = load_manifest(cfg.data.path)
    ok = manifest.get("format") == fmt or (fmt == "prompts" and manifest.get("format") in ("sft", "preference"))
    if not ok:
        raise ConfigError("data.path", f"{cfg.data.path} holds {manifest.get('format')!r} data, {cfg.kind} needs {fmt!r}",
                          f"run data_prep with data.format={fmt} and point data.path at it")
    return Path(cfg.data.path)


def pick_tokenizer(model_dir: Optional[str], data_dir: Path) -> str:
    """The upstream model's tokenizer when it ships one, else the dataset's."""
    if has_tokenizer(model_dir):
        return str(model_dir)
    if has_tokenizer(data_dir / "tokenizer"):
        return str(data_dir / "tokenizer")
    raise ConfigError("model.pretrained", "neither the model nor the dataset has a tokenizer",
                      "export the upstream model with its tokenizer or run data_prep with a tokenizer")


def init_policy_dir(cfg: Any, tokenizer_dir: str) -> str:
    """A randomly initialised policy (``model.pretrained`` null: smoke runs only), saved once."""
    from transformers import AutoTokenizer

    from orchestrator.models.build import build_causal_lm

    out = Path(cfg.output_dir) / "init_policy"
    if not (out / "config.json").is_file():
        tok = AutoTokenizer.from_pretrained(tokenizer_dir)
        ids = {"pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}
        model = build_causal_lm(cfg.model, cfg.trainer.seed, special_ids=ids)
        model.save_pretrained(out, safe_serialization=True)
        copy_tokenizer(tokenizer_dir, out)
    return str(out)


def copy_tokenizer(src: str | Path, dst: str | Path) -> None:
    for name in TOKENIZER_FILES:
        f = Path(src) / name
        if f.is_file():
            shutil.copy2(f, Path(dst) / name)


def lineage_tags(cfg: Any, **upstream: Optional[str]) -> dict[str, str]:
    """MLflow tags naming each upstream model/dataset this job consumed."""
    return {f"upstream.{k}": str(v) for k, v in upstream.items() if v is not None}


def finish_export(tracker: Any, cfg: Any, export_dir: Path, tags: dict[str, str]) -> Optional[str]:
    """Log/register the exported model; returns the registry version (None when not registered)."""
    if not cfg.trainer.export:
        return None
    return tracker.register_model(export_dir, f"{cfg.run_name}", tags)

"""Driver side: the upstream model, dataset and tokenizer a training job reads, resolved before Ray starts
work (local paths checked, MLflow ``models:/``/``runs:/`` URIs downloaded once into the run directory)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from orchestrator.config.errors import ConfigError
from orchestrator.core.files import copy_tokenizer, has_tokenizer, is_remote_uri
from orchestrator.data.shards import load_manifest

PACKED = "pretrain"
"""Dataset format of packed token blocks (pretraining); every other format is records."""


def resolve_model(uri: Optional[str], cfg: Any, key: str) -> Optional[str]:
    """Local directory of an upstream model: a path as is, a ``models:/``/``runs:/`` URI downloaded.

    Raises:
        ConfigError: naming ``key`` when a local path holds no Hugging Face model.
    """
    if uri is None:
        return None
    if is_remote_uri(uri):
        from orchestrator.models.build import resolve_pretrained

        dst = Path(cfg.output_dir) / "upstream" / key.replace(".", "_")
        return resolve_pretrained(uri, str(dst), tracking_uri=cfg.tracking.uri)
    if not (Path(uri) / "config.json").is_file():
        raise ConfigError(key, f"{uri!r} holds no Hugging Face model (config.json)",
                          "point to the export directory of an upstream job, or a models:/ or runs:/ URI")
    return str(Path(uri).resolve())


def dataset_dir(cfg: Any, fmt: str, tokenizer_dir: Optional[str]) -> Path:
    """``data.path`` (checked to hold a dataset of ``fmt``), or the demo dataset when it is null: packed
    blocks of the demo corpus for pretraining, the records of the generated task ``data.task`` otherwise."""
    if cfg.data.path is None:
        if fmt == PACKED:
            from orchestrator.data.demo import ensure_demo_dataset

            return ensure_demo_dataset(cfg.workspace, seq_len=cfg.model.seq_len, vocab_size=cfg.model.vocab_size,
                                       seed=0)
        from orchestrator.data.task import ensure_task_dataset

        return ensure_task_dataset(cfg.workspace, fmt, seed=cfg.trainer.seed, tokenizer_dir=tokenizer_dir,
                                   task=cfg.data.task)
    path = Path(cfg.data.path).expanduser().resolve()
    found = load_manifest(path).get("format", PACKED)
    if not (found == fmt or (fmt == "prompts" and found in ("sft", "preference"))):
        raise ConfigError("data.path", f"{cfg.data.path} holds {found!r} data, {cfg.kind} needs {fmt!r}",
                          f"run data_prep with data.format={fmt} and point data.path at it")
    return path


def pick_tokenizer(model_dir: Optional[str], data_dir: Path, required: bool = True) -> Optional[str]:
    """The upstream model's tokenizer when it ships one, else the dataset's.

    Raises:
        ConfigError: neither has one and ``required``.
    """
    if has_tokenizer(model_dir):
        return str(model_dir)
    if has_tokenizer(data_dir / "tokenizer"):
        return str(data_dir / "tokenizer")
    if required:
        raise ConfigError("model.pretrained", "neither the model nor the dataset has a tokenizer",
                          "export the upstream model with its tokenizer or run data_prep with a tokenizer")
    return None


def init_model_dir(cfg: Any, tokenizer_dir: str) -> str:
    """A randomly initialised causal LM of ``cfg.model`` saved once under the run (smoke runs only)."""
    from orchestrator.data.tokenizer import load_tokenizer
    from orchestrator.models.build import build_causal_lm

    out = Path(cfg.output_dir) / "init_policy"
    if not (out / "config.json").is_file():
        tok = load_tokenizer(tokenizer_dir)
        ids = {"pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}
        model = build_causal_lm(cfg.model, cfg.trainer.seed, special_ids=ids)
        model.save_pretrained(out, safe_serialization=True)
        copy_tokenizer(tokenizer_dir, out)
    return str(out)


def ensure_job_chat_template(tok_dir: str, data_dir: Path, fmt: str, key: str = "model.pretrained") -> bool:
    """Give the job's tokenizer copy a chat template when the dataset holds conversations.

    Precedence: the tokenizer's own template; else the dataset tokenizer's (the one ``data_prep`` chose,
    e.g. ``data.chat_template``); else the default (:data:`~orchestrator.data.chat_template.DEFAULT_CHAT_TEMPLATE`,
    whose control tokens are then added, so the model's embeddings grow to match). Saved in place, so the
    export carries the template.

    Returns:
        Whether the dataset holds conversations.

    Raises:
        ConfigError: the template cannot give exact assistant masks.
    """
    from orchestrator.data.tokenizer import load_tokenizer
    from orchestrator.data.chat_records import is_chat_record
    from orchestrator.data.chat_template import ChatTemplateError, ensure_chat_template
    from orchestrator.data.shards import iter_records

    first = next(iter_records(data_dir), None)
    if first is None or not is_chat_record(first, fmt):
        return False
    tok = load_tokenizer(tok_dir)
    template = None
    if not getattr(tok, "chat_template", None) and has_tokenizer(data_dir / "tokenizer"):
        template = getattr(load_tokenizer(str(data_dir / "tokenizer")), "chat_template", None)
    try:
        ensure_chat_template(tok, template)
    except ChatTemplateError as e:
        raise ConfigError(key, f"its tokenizer's chat template cannot be trained on: {e}",
                          "use a model whose template renders each turn independently, or run data_prep with "
                          "data.chat_template set and a model without a template of its own") from e
    tok.save_pretrained(tok_dir)
    return True

"""Build Hugging Face causal LMs from ``model.*`` (no hub access), or load a local/MLflow directory.

Public API:
    hf_config(model_cfg) -> transformers.PretrainedConfig
    build_causal_lm(model_cfg, seed) -> transformers.PreTrainedModel
    resolve_pretrained(uri, dst_dir=None) -> str          (local dir for a path or an MLflow URI)
    count_params(model) -> int
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from orchestrator.config.errors import ConfigError
from orchestrator.config.model import ModelConfig
from orchestrator.core.files import is_remote_uri

# Shape fields that must agree between model.* and a pretrained directory's config.
_SHAPE_KEYS = {
    "llama": {"hidden_size": "hidden_size", "num_layers": "num_hidden_layers",
              "num_heads": "num_attention_heads", "vocab_size": "vocab_size"},
    "gpt2": {"hidden_size": "n_embd", "num_layers": "n_layer", "num_heads": "n_head", "vocab_size": "vocab_size"},
}


def hf_config(m: ModelConfig) -> Any:
    """The transformers config equivalent to ``model.*`` (pad/bos/eos ids are set by the caller's data)."""
    if m.arch == "gpt2":
        from transformers import GPT2Config

        return GPT2Config(
            vocab_size=m.vocab_size, n_positions=m.seq_len, n_embd=m.hidden_size, n_layer=m.num_layers,
            n_head=m.num_heads, n_inner=m.ffn_size, resid_pdrop=m.dropout, embd_pdrop=m.dropout,
            attn_pdrop=m.dropout, initializer_range=m.init_std, tie_word_embeddings=True, use_cache=True,
            bos_token_id=None, eos_token_id=None,  # GPT-2's 50256 defaults are outside small vocabularies
        )
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=m.vocab_size, hidden_size=m.hidden_size, intermediate_size=m.ffn_size,
        num_hidden_layers=m.num_layers, num_attention_heads=m.num_heads, num_key_value_heads=m.kv_heads,
        max_position_embeddings=m.seq_len, rope_theta=m.rope_theta, attention_dropout=m.dropout,
        initializer_range=m.init_std, tie_word_embeddings=m.tie_embeddings, use_cache=True,
    )


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_causal_lm(m: ModelConfig, seed: int, special_ids: Optional[dict[str, int]] = None,
                    local_pretrained_dir: Optional[str] = None) -> torch.nn.Module:
    """Build the causal LM of ``model.*``: random init seeded by ``seed`` (identical on every rank and
    every run), or ``from_pretrained`` when ``model.pretrained`` is set.

    Args:
        m: the model config.
        seed: init seed (``trainer.seed``).
        special_ids: ``pad_token_id``/``bos_token_id``/``eos_token_id`` from the dataset manifest.
        local_pretrained_dir: an already resolved local directory for ``m.pretrained`` (see
            :func:`resolve_pretrained`); resolved here when omitted.
    """
    from transformers import AutoModelForCausalLM

    seed_everything(seed)
    if m.pretrained:
        path = local_pretrained_dir or resolve_pretrained(m.pretrained)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        check_shape(m, model.config)
    else:
        config = hf_config(m)
        for k, v in (special_ids or {}).items():
            if v is not None:
                setattr(config, k, int(v))
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    # Eager attention is deterministic on CPU and supports every arch; sdpa is picked on GPU.
    return model


def check_shape(m: ModelConfig, config: Any) -> None:
    """Refuse a pretrained directory whose shape differs from ``model.*``."""
    keys = _SHAPE_KEYS.get(getattr(config, "model_type", ""), {})
    for ours, theirs in keys.items():
        have = getattr(config, theirs, None)
        if have is not None and have != getattr(m, ours):
            raise ConfigError(f"model.{ours}", f"{getattr(m, ours)} differs from the pretrained model's {theirs}={have}",
                              f"set model.{ours}={have} (or pick the matching model preset)")


def resolve_pretrained(uri: str, dst_dir: Optional[str] = None, tracking_uri: Optional[str] = None) -> str:
    """A local directory for ``model.pretrained``: a path as is, or an MLflow ``models:/``/``runs:/`` URI
    downloaded with ``mlflow.artifacts.download_artifacts`` (into ``dst_dir`` when given) from the
    ``tracking_uri`` store (default: MLflow's current one)."""
    if not is_remote_uri(uri):
        return str(Path(uri).expanduser().resolve())
    import mlflow

    if dst_dir is not None:
        Path(dst_dir).mkdir(parents=True, exist_ok=True)
    if uri.startswith("models:/") and tracking_uri:
        uri = _model_version_source(uri, tracking_uri)
    local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=dst_dir, tracking_uri=tracking_uri)
    return _find_hf_dir(Path(local))


def _model_version_source(uri: str, tracking_uri: str) -> str:
    """``models:/name/<version>`` or ``models:/name@alias`` -> the version's artifact URI, looked up in the
    given store (MLflow's own resolution would use its global registry URI)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    ref = uri[len("models:/"):]
    if "@" in ref:
        name, alias = ref.split("@", 1)
        mv = client.get_model_version_by_alias(name, alias)
    else:
        name, _, version = ref.partition("/")
        if version in ("", "latest"):
            versions = client.search_model_versions(f"name='{name}'")
            if not versions:
                raise ConfigError("model.pretrained", f"registered model {name!r} has no versions",
                                  "register a model first, or give a runs:/ URI or a local directory")
            version = str(max(int(v.version) for v in versions))
        mv = client.get_model_version(name, version)
    return client.get_model_version_download_uri(mv.name, mv.version)


def _find_hf_dir(root: Path) -> str:
    """The directory holding ``config.json`` inside a downloaded artifact tree."""
    if (root / "config.json").exists():
        return str(root)
    found = sorted(root.rglob("config.json"))
    if not found:
        raise ConfigError("model.pretrained", f"no Hugging Face config.json under {root}",
                          "point to a model logged by a training job (its 'model' artifact)")
    return str(found[0].parent)


def count_params(model: torch.nn.Module) -> int:
    """Unique trainable parameters (tied weights counted once; ZeRO-3 partitioned params by ds_numel)."""
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) in seen or not p.requires_grad:
            continue
        seen.add(id(p))
        total += int(getattr(p, "ds_numel", p.numel()))
    return total

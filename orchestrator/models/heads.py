"""Scalar heads on a causal LM: the critic's value head and the reward model's reward head.

A :class:`ScalarHeadModel` is the LM's backbone (``base_model``: no vocabulary projection) plus a
``Linear(hidden, 1)``; it returns one scalar per position. The reward of a sequence is read at its
last real token (:func:`last_token_values`); the critic reads the position before each response
token. On disk it is an ordinary Hugging Face causal-LM directory (so tokenizer, shapes and
``from_pretrained`` all work) plus ``scalar_head.safetensors`` and ``scalar_head.json`` (kind and
the reward mean/std stored for normalisation).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

HEAD_WEIGHTS = "scalar_head.safetensors"
HEAD_META = "scalar_head.json"


class ScalarHeadModel(nn.Module):
    """Causal-LM backbone + linear scalar head.

    Args:
        lm: a transformers causal LM (its ``base_model`` is used; the LM head is kept only so the
            directory saves as a loadable causal LM).
        kind: ``reward`` or ``value`` (recorded in the metadata).
    """

    def __init__(self, lm: nn.Module, kind: str = "reward", meta: Optional[dict[str, Any]] = None) -> None:
        super().__init__()
        self.lm = lm
        self.kind = kind
        self.meta: dict[str, Any] = dict(meta or {})
        hidden = lm.config.hidden_size if hasattr(lm.config, "hidden_size") else lm.config.n_embd
        self.head = nn.Linear(hidden, 1)
        nn.init.normal_(self.head.weight, std=1.0 / (hidden + 1) ** 0.5)
        nn.init.zeros_(self.head.bias)

    @property
    def config(self) -> Any:
        return self.lm.config

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                position_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``[B, T]`` scalars, one per position."""
        out = self.lm.base_model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                 use_cache=False)
        return self.head(out.last_hidden_state).squeeze(-1).float()

    def save(self, out_dir: str | Path, **meta: Any) -> Path:
        """Write the HF directory plus the head weights and metadata (``meta`` merged into it)."""
        from safetensors.torch import save_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.lm.save_pretrained(out, safe_serialization=True)
        save_file({k: v.detach().contiguous().cpu() for k, v in self.head.state_dict().items()}, str(out / HEAD_WEIGHTS))
        self.meta.update(meta)
        (out / HEAD_META).write_text(json.dumps({"kind": self.kind, **self.meta}, indent=1, sort_keys=True))
        return out


def is_scalar_model_dir(path: str | Path) -> bool:
    return (Path(path) / HEAD_WEIGHTS).is_file()


def load_scalar_model(path: str | Path, kind: Optional[str] = None) -> ScalarHeadModel:
    """Load a directory written by :meth:`ScalarHeadModel.save`, or a plain causal-LM directory
    (then the head is freshly initialised, e.g. a critic started from the policy)."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    path = Path(path)
    lm = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    meta: dict[str, Any] = {}
    if (path / HEAD_META).is_file():
        meta = json.loads((path / HEAD_META).read_text())
    stored_kind = meta.pop("kind", None)
    model = ScalarHeadModel(lm, kind=kind or stored_kind or "reward", meta=meta)
    if is_scalar_model_dir(path):
        model.head.load_state_dict(load_file(str(path / HEAD_WEIGHTS)))
    return model


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real token of each row of a right-padded ``[B, T]`` mask."""
    T = attention_mask.shape[1]
    positions = torch.arange(T, device=attention_mask.device).expand_as(attention_mask)
    return (positions * attention_mask.long()).max(dim=1).values


def last_token_values(values: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``[B]`` scalars read at each row's last real token (works for left and right padding)."""
    idx = last_token_index(attention_mask)
    return values[torch.arange(values.shape[0], device=values.device), idx]

"""``model`` group: the causal LM built from config (or loaded from a local directory)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from orchestrator.config.base import Frozen
from orchestrator.config.errors import require

ARCHS = ("llama", "gpt2")


@dataclass
class ModelConfig(Frozen):
    arch: str = "llama"
    """Architecture family: ``llama`` (RMSNorm, RoPE, SwiGLU) or ``gpt2`` (LayerNorm, learned
    positions, GELU). Both are built with transformers from these fields, no hub access."""
    hidden_size: int = 64
    """Width of the residual stream (d_model)."""
    num_layers: int = 2
    """Number of transformer blocks; must be divisible by ``parallel.pipeline_parallel``."""
    num_heads: int = 4
    """Attention heads; must be divisible by ``parallel.tensor_parallel``."""
    num_kv_heads: Optional[int] = None
    """Key/value heads for grouped-query attention (llama only); null = ``num_heads`` (MHA)."""
    intermediate_size: Optional[int] = None
    """MLP inner width; null = 4*hidden (gpt2) or the Llama rule 8/3*hidden rounded up to 64."""
    vocab_size: int = 512
    """Embedding rows. Must be >= the tokenizer's vocabulary (data_prep writes it in the manifest)."""
    seq_len: int = 64
    """Training context length in tokens; packed blocks from data_prep have this length."""
    tie_embeddings: bool = True
    """Share input embedding and LM head weights (saves vocab*hidden params; gpt2 always ties)."""
    rope_theta: float = 10000.0
    """RoPE base frequency (llama only)."""
    dropout: float = 0.0
    """Dropout in attention and MLP; 0 keeps CPU runs bit-exact and matches modern LLM practice."""
    init_std: float = 0.02
    """Std of the normal weight init (GPT-2/Llama convention)."""
    pretrained: Optional[str] = None
    """Local Hugging Face directory or MLflow model URI (``models:/name/version``, ``runs:/id/path``)
    to start from instead of random init; the shape fields must then match its config."""

    def __post_init__(self) -> None:
        require(self.arch in ARCHS, "model.arch", f"unknown architecture {self.arch!r}",
                f"use one of {', '.join(ARCHS)}")
        for name in ("hidden_size", "num_layers", "num_heads", "vocab_size", "seq_len"):
            require(getattr(self, name) > 0, f"model.{name}", "must be positive", "set a value >= 1")
        require(self.hidden_size % self.num_heads == 0, "model.hidden_size",
                f"{self.hidden_size} is not divisible by model.num_heads={self.num_heads}",
                "pick hidden_size as a multiple of num_heads")
        if self.num_kv_heads is not None:
            require(self.arch == "llama", "model.num_kv_heads", "grouped-query attention is llama-only",
                    "set model.num_kv_heads=null for gpt2")
            require(self.num_kv_heads > 0 and self.num_heads % self.num_kv_heads == 0,
                    "model.num_kv_heads", f"{self.num_kv_heads} does not divide num_heads={self.num_heads}",
                    "use a divisor of model.num_heads")
        require(0.0 <= self.dropout < 1.0, "model.dropout", f"{self.dropout} not in [0, 1)", "use e.g. 0.0")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_heads

    @property
    def ffn_size(self) -> int:
        """The MLP inner width actually used."""
        if self.intermediate_size:
            return self.intermediate_size
        if self.arch == "gpt2":
            return 4 * self.hidden_size
        return ((8 * self.hidden_size // 3 + 63) // 64) * 64

    def num_params(self) -> int:
        """Exact trainable parameter count of the model these fields build."""
        h, v, L, f = self.hidden_size, self.vocab_size, self.num_layers, self.ffn_size
        if self.arch == "gpt2":
            per_layer = (3 * h * h + 3 * h) + (h * h + h) + (2 * h * f + f + h) + 4 * h
            return v * h + self.seq_len * h + L * per_layer + 2 * h
        kv = self.kv_heads * self.head_dim
        per_layer = 2 * h * h + 2 * h * kv + 3 * h * f + 2 * h
        head = 0 if self.tie_embeddings else v * h
        return v * h + L * per_layer + h + head

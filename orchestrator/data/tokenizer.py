"""Byte-level BPE tokenizer training and saving as a Hugging Face fast tokenizer directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Iterator

SPECIAL_TOKENS = {"bos_token": "<|bos|>", "eos_token": "<|eos|>", "pad_token": "<|pad|>"}
MODEL_MAX_LENGTH = int(1e30)
"""What transformers writes for a tokenizer without a length limit (``VERY_LARGE_INTEGER``)."""


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: str | Path) -> Path:
    """Train a byte-level BPE (GPT-2 style pre-tokenisation) and save it for ``AutoTokenizer``.

    Special tokens get the first ids (0 pad, 1 bos, 2 eos), then the 256 byte symbols, then merges.
    Only the ``tokenizers`` library is used: the files are byte for byte what ``PreTrainedTokenizerFast(...)
    .save_pretrained`` writes (a unit test checks it), without importing ``transformers`` - that import costs
    ~5 s of CPU, which every training job's driver paid for its demo dataset (issue #13).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = [SPECIAL_TOKENS["pad_token"], SPECIAL_TOKENS["bos_token"], SPECIAL_TOKENS["eos_token"]]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="$A", pair="$A $B:1", special_tokens=[])  # as HF's
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    config = {"backend": "tokenizers", **SPECIAL_TOKENS, "model_max_length": MODEL_MAX_LENGTH,
              "tokenizer_class": "TokenizersBackend"}
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    return out


def encode_documents(tok_dir: str | Path, texts: Iterable[str]) -> Iterator[list[int]]:
    """Token ids of each text followed by EOS, with the ``tokenizers`` library only (the same ids as
    ``AutoTokenizer.from_pretrained(tok_dir)(text)["input_ids"] + [eos]`` for these tokenizers)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(tok_dir) / "tokenizer.json"))
    eos = tok.token_to_id(SPECIAL_TOKENS["eos_token"])
    for text in texts:
        yield tok.encode(text, add_special_tokens=True).ids + [eos]


def special_token_ids(tok_dir: str | Path) -> dict[str, int]:
    """``{"bos_token_id", "eos_token_id", "pad_token_id"}`` of a tokenizer this module trained."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(tok_dir) / "tokenizer.json"))
    return {f"{k}_id": tok.token_to_id(v) for k, v in SPECIAL_TOKENS.items()}


FAST_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")


def load_tokenizer(path: str | Path) -> Any:
    """The tokenizer saved in ``path``, as ``AutoTokenizer.from_pretrained(path)`` would load it.

    Directories with a ``tokenizer.json`` of the fast class (every tokenizer this project trains, and the ones
    it copies into model exports) load through transformers' tokenizers backend directly: ``AutoTokenizer``
    imports the model auto-classes, and with them torch, torch._dynamo and triton (~4 s of CPU in a driver
    that otherwise needs none of it; issue #13). Anything else goes through ``AutoTokenizer``.
    """
    p = Path(path)
    config = p / "tokenizer_config.json"
    cls = json.loads(config.read_text()).get("tokenizer_class") if config.is_file() else None
    if (p / "tokenizer.json").is_file() and cls in FAST_CLASSES + (None,):
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast.from_pretrained(str(p))
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(p))

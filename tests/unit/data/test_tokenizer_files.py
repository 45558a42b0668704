"""The trained tokenizer's files are exactly what transformers would write, without importing it."""

from __future__ import annotations

import subprocess
import sys

from orchestrator.data.demo import demo_documents
from orchestrator.data.tokenizer import encode_documents, special_token_ids, train_bpe_tokenizer


def test_files_match_transformers_save_pretrained_and_ids_match_autotokenizer(tmp_path):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    docs = list(demo_documents(60, seed=3))
    ours = train_bpe_tokenizer(docs, 400, tmp_path / "ours")
    # what the project wrote before: transformers' own save of the same trained tokenizer
    raw = Tokenizer.from_file(str(ours / "tokenizer.json"))
    raw.post_processor = None
    hf = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<|bos|>", eos_token="<|eos|>", pad_token="<|pad|>")
    hf.save_pretrained(tmp_path / "hf")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (ours / name).read_bytes() == (tmp_path / "hf" / name).read_bytes(), name

    auto = AutoTokenizer.from_pretrained(ours)
    expected = [auto(d)["input_ids"] + [auto.eos_token_id] for d in docs]
    assert list(encode_documents(ours, docs)) == expected
    assert special_token_ids(ours) == {"bos_token_id": auto.bos_token_id, "eos_token_id": auto.eos_token_id,
                                       "pad_token_id": auto.pad_token_id} == {"bos_token_id": 1, "eos_token_id": 2,
                                                                              "pad_token_id": 0}


def test_demo_dataset_is_built_without_importing_transformers(tmp_path):
    code = ("import sys; from orchestrator.data.demo import ensure_demo_dataset; "
            f"ensure_demo_dataset({str(tmp_path)!r}, num_docs=20); "
            "assert 'transformers' not in sys.modules, 'transformers imported'; print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_load_tokenizer_equals_autotokenizer_without_importing_torch(tmp_path):
    docs = list(demo_documents(40, seed=5))
    tok_dir = train_bpe_tokenizer(docs, 300, tmp_path / "tok")
    code = ("import sys; from orchestrator.data.tokenizer import load_tokenizer; "
            f"t = load_tokenizer({str(tok_dir)!r}); "
            "print(type(t).__name__, t.eos_token_id, t('The quiet river')['input_ids'], 'torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    from transformers import AutoTokenizer

    auto = AutoTokenizer.from_pretrained(tok_dir)
    assert r.stdout.split(" ", 2)[:2] == [type(auto).__name__, str(auto.eos_token_id)]
    assert r.stdout.strip() == f"{type(auto).__name__} {auto.eos_token_id} {auto('The quiet river')['input_ids']} False"

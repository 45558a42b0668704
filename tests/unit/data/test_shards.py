"""The packed and records dataset formats shared by data_prep and the training jobs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from orchestrator.data.demo import ensure_demo_dataset, pack_tokens
from orchestrator.data.shards import (
    PackedDataset,
    load_manifest,
    read_records,
    write_packed_dataset,
    write_records_dataset,
)


def test_packed_roundtrip_across_shards(tmp_path):
    blocks = [np.arange(i * 40, (i + 1) * 40).reshape(5, 8) % 300 for i in range(3)]
    m = write_packed_dataset(tmp_path, blocks, seq_len=8, vocab_size=300, eos_token_id=2, blocks_per_shard=4)
    ds = PackedDataset(tmp_path)
    assert len(ds) == 15 == m["num_blocks"] and len(m["shards"]) == 3  # cut at batch boundaries once >= 4 blocks
    np.testing.assert_array_equal(ds[7], (np.arange(56, 64) % 300))
    assert ds[14].dtype == np.int64
    with pytest.raises(IndexError):
        ds[15]
    # same content -> same digest; different content -> different digest
    m2 = write_packed_dataset(tmp_path / "b", blocks, seq_len=8, vocab_size=300, eos_token_id=2, blocks_per_shard=4)
    m3 = write_packed_dataset(tmp_path / "c", blocks[:2], seq_len=8, vocab_size=300, eos_token_id=2)
    assert m["digest"] == m2["digest"] != m3["digest"]


def test_token_beyond_vocab_refused(tmp_path):
    with pytest.raises(ValueError, match="vocab_size"):
        write_packed_dataset(tmp_path, [np.full((1, 4), 70)], seq_len=4, vocab_size=64, eos_token_id=0)
    with pytest.raises(FileNotFoundError, match="data_prep"):
        load_manifest(tmp_path)  # an interrupted write leaves no manifest


def test_records_roundtrip(tmp_path):
    recs = [{"id": str(i), "prompt": f"p{i}", "chosen": "a", "rejected": "b"} for i in range(3)]
    m = write_records_dataset(tmp_path, "preference", recs)
    assert m["num_records"] == 3 and read_records(tmp_path) == recs
    with pytest.raises(ValueError, match="lacks"):
        write_records_dataset(tmp_path / "bad", "sft", [{"id": "1", "prompt": "x"}])


def test_pack_tokens_drops_only_the_tail():
    docs = iter([[1, 2, 3], [4, 5], [6, 7, 8, 9, 10]])
    out = np.concatenate(list(pack_tokens(docs, 4)))
    np.testing.assert_array_equal(out, np.arange(1, 9).reshape(2, 4))


def test_demo_dataset_is_built_once_and_loads_with_transformers(tmp_path):
    from transformers import AutoTokenizer

    path = ensure_demo_dataset(tmp_path, seq_len=32, vocab_size=300, num_docs=30)
    mtime = (path / "manifest.json").stat().st_mtime
    assert ensure_demo_dataset(tmp_path, seq_len=32, vocab_size=300, num_docs=30) == path
    assert (path / "manifest.json").stat().st_mtime == mtime
    ds = PackedDataset(path)
    tok = AutoTokenizer.from_pretrained(ds.tokenizer_dir)
    assert len(tok) <= 300 and ds.manifest["eos_token_id"] == tok.eos_token_id
    text = tok.decode(ds[0])
    assert "the" in text.lower() and json.loads((path / "manifest.json").read_text())["seq_len"] == 32

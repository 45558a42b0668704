"""Causal LMs built from model.* match the schema's parameter count and are seeded."""

from __future__ import annotations

import pytest
import torch

from orchestrator.config import ConfigError
from orchestrator.config.model import ModelConfig
from orchestrator.models.build import build_causal_lm, check_shape, count_params, resolve_pretrained


@pytest.mark.parametrize("arch", ("llama", "gpt2"))
def test_param_count_matches_schema_and_init_is_seeded(arch):
    m = ModelConfig(arch=arch, num_kv_heads=2 if arch == "llama" else None)
    a, b, c = build_causal_lm(m, 7), build_causal_lm(m, 7), build_causal_lm(m, 8)
    assert count_params(a) == m.num_params()
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(x, y) for x, y in zip(a.parameters(), c.parameters()))
    assert a.config.vocab_size == m.vocab_size


def test_special_ids_reach_the_config():
    model = build_causal_lm(ModelConfig(), 0, special_ids={"eos_token_id": 3, "pad_token_id": 0, "bos_token_id": None})
    assert (model.config.eos_token_id, model.config.pad_token_id) == (3, 0)


def test_pretrained_dir_roundtrip_and_shape_check(tmp_path):
    m = ModelConfig(arch="gpt2")
    build_causal_lm(m, 3).save_pretrained(tmp_path / "hf")
    loaded = build_causal_lm(ModelConfig(arch="gpt2", pretrained=str(tmp_path / "hf")), 99)
    again = build_causal_lm(m, 3)
    assert all(torch.equal(x, y) for x, y in zip(loaded.parameters(), again.parameters()))
    assert resolve_pretrained(str(tmp_path / "hf")) == str((tmp_path / "hf").resolve())
    with pytest.raises(ConfigError) as err:
        check_shape(ModelConfig(arch="gpt2", hidden_size=32), loaded.config)
    assert err.value.key == "model.hidden_size"

"""Chat settings are refused before Ray with the key named: sft.train_on, data.chat_template."""

from __future__ import annotations

import pytest

from orchestrator import kinds
from orchestrator.config import ConfigError
from orchestrator.kinds import load


def test_sft_train_on_values(tmp_path):
    assert load("sft", [f"workspace={tmp_path}"]).sft.train_on == "all_assistant"
    assert load("sft", [f"workspace={tmp_path}", "sft.train_on=last_assistant"]).sft.train_on == "last_assistant"
    with pytest.raises(ConfigError) as info:
        load("sft", [f"workspace={tmp_path}", "sft.train_on=everything"])
    assert info.value.key == "sft.train_on"


def test_data_chat_template_checked_before_ray(tmp_path):
    tpl = tmp_path / "t.jinja"
    tpl.write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    kinds.validate(load("data_prep", [f"workspace={tmp_path}", "data.format=sft", f"data.chat_template={tpl}"]))
    for extra, key in ((["data.format=sft", "data.chat_template=no_such_file.jinja"], "data.chat_template"),
                       ([f"data.chat_template={tpl}"], "data.chat_template")):  # pretrain has no conversations
        with pytest.raises(ConfigError) as info:
            kinds.validate(load("data_prep", [f"workspace={tmp_path}", *extra]))
        assert info.value.key == key

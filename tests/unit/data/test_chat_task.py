"""The demo task's rule reward on conversation prompts: a rendered conversation holds every earlier
request, and the response is scored against the last one."""

from __future__ import annotations

from orchestrator.data import task
from orchestrator.data.chat import render_prompt
from tests.unit.training.test_records_chat import tok  # noqa: F401  (module fixture)


def test_rule_reward_reads_the_last_request_of_a_rendered_conversation(tok):  # noqa: F811
    msgs = [{"role": "system", "content": task.CHAT_SYSTEM}, {"role": "user", "content": "list 2 color:"},
            {"role": "assistant", "content": "red blue"}, {"role": "user", "content": "list 3 fruit:"}]
    text = render_prompt(tok, msgs)
    assert text.count("list ") == 2
    assert task.parse_prompt(text) == ("fruit", 3)
    assert task.score_texts([text, text], ["apple plum peach", "red blue green"]) == [1.0, 0.0]
    assert task.parse_prompt("list 3 fruit:") == ("fruit", 3) and task.parse_prompt("list 3 cars:") is None

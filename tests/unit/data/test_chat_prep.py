"""data_prep stage 1 and 3 on records with conversations, in-process: canonical chat records, quarantine
reasons counted, message contents normalised and scrubbed, flat records unchanged."""

from __future__ import annotations

import json
from pathlib import Path


from orchestrator.config.data_prep import DataPrepDataConfig
from orchestrator.data import task
from orchestrator.data.finalize import finalize_partition, iter_kept
from orchestrator.data.partition import process_partition
from orchestrator.data.readers import plan_partitions


def _write(path: Path, recs: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def _run(tmp_path: Path, recs: list[dict], **kw) -> tuple[dict, list[dict]]:
    cfg = DataPrepDataConfig(format=kw.pop("format", "sft"), **kw)
    [part] = plan_partitions(str(_write(tmp_path / "in.jsonl", recs)), "auto", 1 << 20)
    summary = process_partition(part, cfg, tmp_path / "work")
    finalize_partition(0, cfg, tmp_path / "work", tmp_path / "out")
    return summary, list(iter_kept(tmp_path / "out"))


def test_sft_conversations_and_flat_records_side_by_side(tmp_path):
    chats = task.chat_records(3, seed=1, bad=True)
    flat = task.sft_records(2, seed=1)
    summary, kept = _run(tmp_path, chats + flat)
    assert summary["quarantined"] == {f"chat_{r}": 1 for r in task.BAD_CONVERSATIONS}
    assert summary["docs_in"] == summary["docs_out"] == 5
    by_id = {r["id"]: r for r in kept}
    for c in chats[:3]:
        assert by_id[c["id"]] == {"id": c["id"], "messages": c["messages"]}
    for f in flat:
        assert by_id[f["id"]] == {"id": f["id"], "prompt": f["prompt"], "response": f["response"].strip()}  # normalised, as before
    quarantine = [json.loads(x) for x in (tmp_path / "work/stage1/quarantine/part-00000.jsonl").read_text().splitlines()]
    assert sorted(q["reason"] for q in quarantine) == sorted(f"chat_{r}" for r in task.BAD_CONVERSATIONS)


def test_message_contents_normalised_scrubbed_and_extra_fields_kept(tmp_path):
    msgs = [{"role": "user", "content": "mail me at  ann@example.com\u200b please"},
            {"role": "assistant", "content": "ok", "weird_key": 1}]
    _, [rec] = _run(tmp_path, [{"conv": msgs, "source": "web"}], messages_field="conv")
    assert rec["source"] == "web" and rec["id"].startswith("doc-") and "conv" not in rec
    assert rec["messages"][1] == {"role": "assistant", "content": "ok"}
    user = rec["messages"][0]["content"]
    assert "ann@example.com" not in user and "\u200b" not in user and "  " not in user


def test_preference_and_prompts_in_chat_form(tmp_path):
    prompt = [{"role": "user", "content": "list 2 fruit:"}]
    pref = {"id": "p", "prompt": prompt, "chosen": [{"role": "assistant", "content": "plum pear"}],
            "rejected": [{"role": "assistant", "content": "red cat"}]}
    same = {**pref, "id": "q", "rejected": pref["chosen"]}
    summary, [rec] = _run(tmp_path / "a", [pref, same], format="preference")
    assert rec == pref and summary["quarantined"] == {"chat_identical_pair": 1}
    conv = task.chat_records(1, seed=2)[0]
    _, [rec] = _run(tmp_path / "b", [conv], format="prompts")
    assert rec == {"id": conv["id"], "prompt": conv["messages"][:-1]}


def test_preference_conversations_both_forms_and_quarantine_per_reason(tmp_path):
    recs = task.chat_preference_records(6, seed=3, bad=True)
    summary, kept = _run(tmp_path, recs, format="preference")
    assert summary["quarantined"] == {f"chat_{r}": 1 for r in task.BAD_PREFERENCES}
    assert summary["docs_in"] == summary["docs_out"] == 6
    by_id = {r["id"]: r for r in kept}
    for i, raw in enumerate(recs[:6]):
        rec = by_id[raw["id"]]
        assert set(rec) == {"id", "prompt", "chosen", "rejected"}
        prompt = raw["chosen"][:-1] if i % 2 == 0 else raw["messages"]  # whole conversations / shared prompt
        assert rec["prompt"] == prompt and rec["prompt"][-1]["role"] == "user"
        ask = rec["prompt"][-1]["content"]
        [c], [r] = rec["chosen"], rec["rejected"]
        assert c["role"] == r["role"] == "assistant"
        assert task.score(ask, c["content"]) == 1.0 and task.score(ask, r["content"]) == 0.0


def test_prompt_conversations_keep_up_to_the_last_request_and_quarantine_per_reason(tmp_path):
    recs = task.chat_prompt_records(4, seed=3, bad=True)
    summary, kept = _run(tmp_path, recs, format="prompts")
    assert summary["quarantined"] == {f"chat_{r}": 1 for r in task.BAD_PROMPTS}
    by_id = {r["id"]: r for r in kept}
    assert len(kept) == 4
    for raw in recs[:4]:
        assert by_id[raw["id"]] == {"id": raw["id"], "prompt": raw["messages"][:-1]}  # reference answer removed

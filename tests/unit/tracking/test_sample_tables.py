"""Sample tables of sft and dpo: held-out rows, the trained model's answers, per-pair margins, and the
one logging path (local copy + ``mlflow.log_table``, once per step) into a real local MLflow store."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from mlflow import MlflowClient

from orchestrator.data import arithmetic
from orchestrator.kinds import load
from orchestrator.kinds.dpo import DPOTask, dpo_objective
from orchestrator.kinds.sft import SFTTask
from orchestrator.tracking import JobTracker, MetricsLogger
from orchestrator.tracking.samples import log_sample_table, sample_artifact
from orchestrator.training.records import collate, encode_records
from orchestrator.training.samples import dpo_sample_table, sft_sample_table, split_last_span
from orchestrator.training.task import WorkerContext

SEQ = 48


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from a second thread, and on a busy machine two spinning OpenMP threads
    made the 100 steps below take minutes instead of seconds."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from transformers import AutoTokenizer

    from orchestrator.data.tokenizer import train_bpe_tokenizer

    texts = [r["prompt"] + r["response"] for r in arithmetic.sft_records(300, 0)]
    return AutoTokenizer.from_pretrained(train_bpe_tokenizer(texts, 400, tmp_path_factory.mktemp("tok")))


def tiny_lm(tok, seed: int = 0):
    from orchestrator.config.model import ModelConfig
    from orchestrator.models.build import build_causal_lm

    ids = {"pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}
    return build_causal_lm(ModelConfig(vocab_size=len(tok), seq_len=SEQ, hidden_size=32, num_heads=2), seed, ids)


def sft_batches(tok, records):
    enc = encode_records(tok, records, "sft", SEQ, 24)
    return [collate(enc[i:i + 2], "sft", tok.pad_token_id, SEQ, False) for i in range(0, len(enc), 2)]


def overfit(model, batch, steps: int = 100) -> None:
    """A few Adam steps on the response tokens of one batch (what sft does, minus DeepSpeed)."""
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch["input_ids"][:, 1:], reduction="none")
        loss = (nll * batch["loss_mask"][:, 1:]).sum() / batch["loss_mask"][:, 1:].sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def test_split_last_span_takes_the_final_reply_and_everything_before_it():
    assert split_last_span([5, 6, 7, 8, 9], [0, 0, 1, 1, 0]) == ([5, 6], [7, 8])
    # a conversation trained on every assistant reply: the prompt keeps the earlier reply as context
    assert split_last_span([1, 2, 3, 4, 5, 6, 7], [0, 1, 1, 0, 0, 1, 1]) == ([1, 2, 3, 4, 5], [6, 7])
    assert split_last_span([1, 2], [0, 0]) == ([1, 2], [])


def test_sft_table_shows_the_trained_models_greedy_answers_against_the_references(tok):
    records = [{"prompt": "What is 2 + 3? Answer:", "response": " 5"}, {"prompt": "What is 7 + 1? Answer:", "response": " 8"}]
    batches = sft_batches(tok, records)
    model = tiny_lm(tok)
    before = sft_sample_table(model, tok, batches, 4, 8, SEQ)
    overfit(model, batches[0])
    after = sft_sample_table(model, tok, batches, 4, 8, SEQ)
    assert after["prompt"] == [r["prompt"] for r in records]  # the held-out prompts, in order
    assert after["reference"] == ["5", "8"]
    assert after["response"] == ["5", "8"] and after["match"] == [1.0, 1.0]  # the model learnt them
    assert before["match"] == [0.0, 0.0]
    assert all(a < b / 5 for a, b in zip(after["reference_nll"], before["reference_nll"]))
    assert math.isclose(before["reference_nll"][0], math.log(len(tok)), rel_tol=0.1)  # untrained: ~uniform
    assert len(sft_sample_table(model, tok, batches, 1, 8, SEQ)["prompt"]) == 1  # n rows, not all


def test_dpo_table_margin_is_the_objectives_per_pair_margin(tok):
    records = arithmetic.preference_records(3, 0)
    enc = encode_records(tok, records, "preference", SEQ, 24)
    batch = collate(enc, "preference", tok.pad_token_id, SEQ, False)
    policy, ref = tiny_lm(tok, 0), tiny_lm(tok, 1)
    objective = dpo_objective(ref, 0.1, 0.0)
    table = dpo_sample_table(policy, tok, [batch], objective, 8)
    assert table["prompt"] == [r["prompt"] for r in records]
    assert table["chosen"] == [r["chosen"].strip() for r in records]
    assert table["rejected"] == [r["rejected"].strip() for r in records]

    @torch.no_grad()
    def seq_logprob(model, ids):  # log pi(response | prompt), by hand
        prompt, span = split_last_span(*ids)
        x = torch.tensor([prompt + span])
        lp = torch.log_softmax(model(input_ids=x).logits[0, :-1], -1).gather(-1, x[0, 1:, None])[:, 0]
        return float(lp[len(prompt) - 1:].sum())

    for i, (c, r) in enumerate(enc):
        h = 0.1 * ((seq_logprob(policy, (c.ids, c.loss_mask)) - seq_logprob(ref, (c.ids, c.loss_mask)))
                   - (seq_logprob(policy, (r.ids, r.loss_mask)) - seq_logprob(ref, (r.ids, r.loss_mask))))
        assert math.isclose(table["margin"][i], h, abs_tol=2e-5), (i, table["margin"][i], h)
        assert math.isclose(table["margin"][i], table["chosen_reward"][i] - table["rejected_reward"][i], abs_tol=2e-5)
    _, stats = objective(policy, batch)  # what the held-out metric averages
    assert math.isclose(sum(table["margin"]) / 3, stats["margin"], abs_tol=2e-5)


def _ctx(cfg, tok, rank: int = 0, tp: int = 1) -> WorkerContext:
    return WorkerContext(cfg=cfg, plan=SimpleNamespace(tp_size=tp, pp_size=1), rank=rank, dp_rank=rank, model_dir=None,
                         tokenizer_dir=None, special_ids={}, tokenizer=tok)


def test_sft_hook_logs_every_n_steps_and_the_last_into_the_run_once(tok, workspace, monkeypatch):
    cfg = load("sft", [f"workspace={workspace}", "run_name=s", "trainer.max_steps=7", "sft.sample_every=3",
                       "sft.num_samples_logged=2", "sft.sample_max_new_tokens=4", "tracking.log_system_metrics=false"])
    batches = sft_batches(tok, arithmetic.sft_records(3, 1))
    engine = SimpleNamespace(module=tiny_lm(tok))
    engine.module.train()
    task, ctx = SFTTask(), _ctx(cfg, tok)
    with JobTracker.start(cfg) as tracker:
        sink = MetricsLogger(tracker.client, tracker.run_id)
        logged = [s for s in range(1, 8) if task.log_samples(engine, ctx, s, batches, None, sink)]
        assert engine.module.training  # back in training mode
        assert task.log_samples(engine, ctx, 6, batches, None, sink)  # a replayed step (recovery)
        assert task.log_samples(engine, _ctx(cfg, tok, rank=1), 6, batches, None, sink) is None  # rank 0 only
        assert task.log_samples(engine, _ctx(cfg, tok, tp=2), 6, batches, None, sink) is None  # sharded weights
    assert logged == [3, 6, 7]
    client = MlflowClient(cfg.tracking.uri)
    run = client.get_run(tracker.run_id)
    tables = json.loads(run.data.tags["mlflow.loggedArtifacts"])
    assert tables == [{"path": sample_artifact(s), "type": "table"} for s in (3, 6, 7)]
    local = Path(cfg.output_dir) / "samples" / "step_000006.json"
    logged6 = json.loads(Path(client.download_artifacts(tracker.run_id, sample_artifact(6), str(workspace))).read_text())
    assert logged6["columns"] == ["step", "prompt", "response", "reference", "match", "reference_nll"]
    assert len(logged6["data"]) == 2  # the replay did not append its rows a second time
    monkeypatch.setenv("MLFLOW_TRACKING_URI", cfg.tracking.uri)  # load_table searches with the fluent API
    frame = client.load_table(run.info.experiment_id, sample_artifact(6), run_ids=[tracker.run_id])
    assert list(frame["prompt"]) == [row[1] for row in logged6["data"]]  # MLflow's own reader takes it
    assert [row[0] for row in logged6["data"]] == [6, 6]
    assert json.loads(local.read_text())["prompt"] == [row[1] for row in logged6["data"]]
    off = load("sft", [f"workspace={workspace}", "sft.sample_every=0"])
    assert SFTTask().log_samples(engine, _ctx(off, tok), 50, batches, None, sink) is None


def test_dpo_hook_logs_pairs_and_tracking_off_keeps_the_local_copy(tok, workspace):
    cfg = load("dpo", [f"workspace={workspace}", "run_name=d", "trainer.max_steps=4", "dpo.sample_every=2",
                       "dpo.num_samples_logged=2"])
    enc = encode_records(tok, arithmetic.preference_records(4, 2), "preference", SEQ, 24)
    batches = [collate(enc, "preference", tok.pad_token_id, SEQ, False)]
    objective = dpo_objective(tiny_lm(tok, 1), 0.1, 0.0)
    path = DPOTask().log_samples(SimpleNamespace(module=tiny_lm(tok)), _ctx(cfg, tok), 2, batches, objective, None)
    table = json.loads(Path(path).read_text())
    assert list(table) == ["step", "prompt", "chosen", "rejected", "chosen_reward", "rejected_reward", "margin"]
    assert table["step"] == [2, 2] and len(table["margin"]) == 2


def test_log_sample_table_survives_an_unreachable_server(tmp_path):
    class Down:
        def __getattr__(self, name):
            def call(*args, **kwargs):
                raise ConnectionError("connection refused")

            return call

    import numpy as np

    path = log_sample_table(Down(), "run", {"prompt": ["p"], "score": np.array([0.5], dtype=np.float32)}, 5, tmp_path)
    assert json.loads(path.read_text()) == {"prompt": ["p"], "score": [0.5]}  # numpy scalars as numbers
    assert path == tmp_path / "samples" / "step_000005.json"

"""DPO on conversations from a model without a chat template: the default template's control tokens are
added to the job's tokenizer, so the policy's embeddings grow; the frozen reference must grow identically
(same new rows), or the reference forward pass fails on the new ids and the implicit reward is not 0."""

from __future__ import annotations

import torch

from orchestrator.data.chat_template import ensure_chat_template
from orchestrator.kinds import load
from orchestrator.kinds.dpo import DPOTask
from orchestrator.training.task import WorkerContext
from tests.unit.data.test_chat import CORPUS


def test_reference_grows_like_the_policy(tmp_path):
    from transformers import AutoTokenizer

    from orchestrator.data.tokenizer import train_bpe_tokenizer
    from orchestrator.models.build import build_causal_lm

    tok = AutoTokenizer.from_pretrained(train_bpe_tokenizer(CORPUS * 20, 300, tmp_path / "tok"))
    n = len(tok)
    build_causal_lm(load("dpo", [f"model.vocab_size={n}"]).model, 0).save_pretrained(tmp_path / "base")
    cfg = load("dpo", [f"model.vocab_size={n}", f"model.pretrained={tmp_path / 'base'}"])
    ensure_chat_template(tok)  # no template of its own: the default adds <|im_start|>, <|im_end|>
    assert len(tok) == n + 2
    ctx = WorkerContext(cfg=cfg, plan=None, rank=0, dp_rank=0, model_dir=str(tmp_path / "base"), tokenizer_dir=None,
                        special_ids={}, tokenizer=tok)
    task = DPOTask()
    policy, ref = task.build_model(ctx), task.reference(ctx)
    emb = ref.get_input_embeddings().weight
    assert emb.shape[0] == policy.get_input_embeddings().weight.shape[0] == n + 2
    pol_state = policy.state_dict()
    assert all(torch.equal(v, pol_state[k]) for k, v in ref.state_dict().items())  # new rows included
    ids = torch.tensor([tok(["<|im_start|>user\nhello<|im_end|>"], add_special_tokens=False)["input_ids"][0]])
    assert ids.max() >= n  # the new control tokens are in the input
    with torch.no_grad():
        assert torch.equal(policy(input_ids=ids).logits, ref(input_ids=ids).logits)

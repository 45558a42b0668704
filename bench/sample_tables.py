"""What one sample table costs rank 0 (issue #17): an sft table (greedy generations) and a dpo table
(forward passes of policy and reference), on the demo model (``model=tiny``), CPU, one thread.

The model is untrained, so every greedy response runs to ``sft.sample_max_new_tokens`` (the worst case).

    python bench/sample_tables.py                 # 4 rows, 32 new tokens, 5 repeats (mean printed)
    python bench/sample_tables.py --rows 8 --new-tokens 64
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(1)
    from transformers import AutoTokenizer

    from orchestrator.config.model import ModelConfig
    from orchestrator.data import arithmetic
    from orchestrator.data.tokenizer import train_bpe_tokenizer
    from orchestrator.kinds.dpo import dpo_objective
    from orchestrator.models.build import build_causal_lm
    from orchestrator.training.records import collate, encode_records
    from orchestrator.training.samples import dpo_sample_table, sft_sample_table

    recs = arithmetic.sft_records(200, 0)
    tok = AutoTokenizer.from_pretrained(train_bpe_tokenizer([r["prompt"] + r["response"] for r in recs], 400,
                                                            tempfile.mkdtemp()))
    ids = {"pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}
    model = build_causal_lm(ModelConfig(vocab_size=len(tok)), 0, ids).eval()
    sft = [collate(encode_records(tok, recs[:a.rows], "sft", 64, 48), "sft", tok.pad_token_id, 64, False)]
    pref = [collate(encode_records(tok, arithmetic.preference_records(a.rows, 0), "preference", 64, 48),
                    "preference", tok.pad_token_id, 64, False)]
    objective = dpo_objective(build_causal_lm(ModelConfig(vocab_size=len(tok)), 1, ids), 0.1, 0.0)
    for name, make in (("sft", lambda: sft_sample_table(model, tok, sft, a.rows, a.new_tokens, 64)),
                       ("dpo", lambda: dpo_sample_table(model, tok, pref, objective, a.rows))):
        make()  # warm-up
        t0 = time.perf_counter()
        for _ in range(a.repeat):
            make()
        print(f"{name} table, {a.rows} rows: {(time.perf_counter() - t0) / a.repeat * 1000:.0f} ms")


if __name__ == "__main__":
    main()

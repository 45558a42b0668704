"""Rollout tokens/s: the ``hf`` engine (the actor's ``generate``) vs the ``vllm`` engine, same model and prompts.

Both engines are the project's own (:mod:`orchestrator.rlhf.rollout_engines`), built from one randomly
initialised Llama (default 8 layers x 512 hidden, 8 heads of 64, vocab 4096): the same left-padded prompts,
the same sampling (temperature 1, top-p 1, at most ``--new`` tokens, stop at EOS). Throughput = generated
tokens (up to and including EOS) / median wall time of ``--repeats`` rollouts after one warm-up each. Also
prints vLLM's start-up and the time of one weight sync (``reload_weights`` of the full model), the costs a
PPO step pays on top of generation. Needs the ``[vllm]`` extra.

Commands:
    python bench/rollout_hf_vs_vllm.py                       # CPU, 8x512, 32 prompts x 64 new tokens
    python bench/rollout_hf_vs_vllm.py --batch 64 --new 128 --threads 2
    python bench/rollout_hf_vs_vllm.py --gpu --layers 16 --hidden 2048 --heads 32 --vocab 32000   # ~1B, bf16
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

EOS, PAD = 2, 0


def build(args):
    import torch

    from orchestrator.config.model import ModelConfig
    from orchestrator.models.build import build_causal_lm

    cfg = ModelConfig(hidden_size=args.hidden, num_layers=args.layers, num_heads=args.heads, vocab_size=args.vocab,
                      seq_len=args.prompt + args.new)
    model = build_causal_lm(cfg, 0, special_ids={"pad_token_id": PAD, "eos_token_id": EOS})
    if args.gpu:
        model = model.to("cuda", dtype=torch.bfloat16)
    return model.eval(), cfg


def prompts(args):
    import torch

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, args.vocab, (args.batch, args.prompt), generator=g)
    att = torch.ones_like(ids)
    for i in range(args.batch):  # varied prompt lengths (left padding), as real rollouts have
        cut = i % (args.prompt // 2)
        ids[i, :cut], att[i, :cut] = PAD, 0
    dev = "cuda" if args.gpu else "cpu"
    return {"input_ids": ids.to(dev), "attention_mask": att.to(dev)}


def time_engine(engine, batch, sampling, repeats: int) -> tuple[float, float]:
    """(median seconds per rollout, generated tokens per rollout)."""
    from orchestrator.rlhf.rollout import response_mask

    engine.generate(batch, 0, EOS, PAD, sampling)  # warm-up (vLLM: first-call allocations)
    times, tokens = [], []
    for r in range(repeats):
        t0 = time.perf_counter()
        out = engine.generate(batch, r + 1, EOS, PAD, sampling)
        times.append(time.perf_counter() - t0)
        tokens.append(float(response_mask(out["responses"].cpu(), EOS).sum()))
    return statistics.median(times), statistics.mean(tokens)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=32, help="prompts per rollout")
    ap.add_argument("--prompt", type=int, default=32, help="prompt tokens (before left padding)")
    ap.add_argument("--new", type=int, default=64, help="max new tokens")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gpu", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if args.gpu else "cpu")
    import torch

    from orchestrator.config.rollout import RolloutConfig
    from orchestrator.rlhf.rollout_engines import HFEngine, Sampling, VLLMEngine, full_named_parameters

    torch.set_num_threads(args.threads)
    model, mcfg = build(args)
    batch, sampling = prompts(args), Sampling(args.new)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: llama {args.layers}x{args.hidden} ({args.heads} heads), vocab {args.vocab}, {n_params / 1e6:.1f}M "
          f"params; {args.batch} prompts x <= {args.new} new tokens; {'GPU bf16' if args.gpu else f'CPU fp32, {args.threads} threads'}")
    hf_s, hf_tok = time_engine(HFEngine(model), batch, sampling, args.repeats)
    print(f"hf   : {hf_tok / hf_s:9.1f} tokens/s  ({hf_tok:.0f} tokens in {hf_s:.2f} s)")
    t0 = time.perf_counter()
    eng = VLLMEngine(model, RolloutConfig(engine="vllm"), max_model_len=mcfg.seq_len, max_num_seqs=args.batch, seed=0,
                     precision="bf16" if args.gpu else "fp32", use_gpu=args.gpu)
    start_s = time.perf_counter() - t0
    v_s, v_tok = time_engine(eng, batch, sampling, args.repeats)
    t0 = time.perf_counter()
    eng.sync(full_named_parameters(model, 0), 1)
    sync_s = time.perf_counter() - t0
    print(f"vllm : {v_tok / v_s:9.1f} tokens/s  ({v_tok:.0f} tokens in {v_s:.2f} s); start-up {start_s:.1f} s, "
          f"one weight sync {sync_s:.2f} s")
    print(f"ratio vllm/hf: {(v_tok / v_s) / (hf_tok / hf_s):.2f}x")


if __name__ == "__main__":
    main()

"""Whole RL step time, ``rollout.engine=hf`` vs ``vllm``: ``ppo`` and ``grpo`` jobs as ``orchestrator run`` runs them.

Each of the four jobs (ppo/grpo x hf/vllm) is a real job (local Ray, the roles as Ray actors with DeepSpeed
engines, the demo task's prompts and tokenizer) on a randomly initialised Llama, default 8 layers x 512 hidden
(8 heads of 64), so that generation has the weight it has in practice. Steps run ``--steps`` times; step 1
also pays the vLLM engine's start-up (built on first use), so the figure is the median ``step_time_s`` of the
later steps, split into generation (``time_generate_s`` / ``time_generate_score_s``, GRPO's includes the
reward functions), scoring and training (which includes the weight sync into the engine). Both engines
sample the same number of tokens per step: a random policy rarely emits EOS, so responses run to
``--new`` tokens. No MLflow, no checkpoints, no export: the step itself.

Commands:
    python bench/rl_step_hf_vs_vllm.py                                     # CPU, 8x512, 32 responses x 64 tokens
    python bench/rl_step_hf_vs_vllm.py --kinds grpo --engines vllm --steps 2
    python bench/rl_step_hf_vs_vllm.py --gpu --layers 16 --hidden 2048 --heads 32   # ~1B on a GPU node
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GENERATE_KEY = {"ppo": "time_generate_s", "grpo": "time_generate_score_s"}
SCORE_KEY = {"ppo": "time_score_s", "grpo": "time_logprobs_s"}


def overrides(kind: str, engine: str, args: argparse.Namespace, ws: str) -> list[str]:
    model = [f"model.hidden_size={args.hidden}", f"model.num_layers={args.layers}", f"model.num_heads={args.heads}",
             f"model.seq_len={args.prompt + args.new}", "model.pretrained=null"]
    common = [f"workspace={ws}", f"run_name={kind}_{engine}", f"trainer.max_steps={args.steps}",
              "trainer.save_every=0", "trainer.export=false", "tracking.enabled=false", f"rollout.engine={engine}",
              f"cluster.cpus_per_worker={args.threads}", "parallel.micro_batch_size=8"]
    if args.gpu:
        common += ["cluster.use_gpu=true", f"{kind}.actor.num_gpus=0.5"]
    if kind == "ppo":
        return model + common + [f"ppo.rollout_batch_size={args.responses}", f"ppo.minibatch_size={args.responses // 2}",
                                 f"ppo.max_new_tokens={args.new}", f"ppo.sample_every={args.steps}"]
    return model + common + [f"grpo.rollout_batch_size={args.responses // args.group}", f"grpo.group_size={args.group}",
                             f"grpo.minibatch_size={args.responses // 2}", f"grpo.max_new_tokens={args.new}",
                             f"grpo.sample_every={args.steps}",
                             "grpo.num_eval_prompts=0"]  # the held-out eval generates too: not part of the step


def run_job(kind: str, engine: str, args: argparse.Namespace) -> dict[str, float]:
    from orchestrator.kinds import load, run
    from orchestrator.training.loop import read_steps

    with tempfile.TemporaryDirectory(prefix=f"bench-{kind}-{engine}-") as ws:
        cfg = load(kind, overrides(kind, engine, args, ws))  # validated, as `orchestrator run` does
        t0 = time.perf_counter()
        res = run(cfg)
        job_s = time.perf_counter() - t0
        steps = read_steps(res["output_dir"])
    later = [steps[s] for s in sorted(steps) if s > 1] or [steps[1]]

    def med(key: str) -> float:
        return statistics.median(m[key] for m in later)

    return {"job_s": job_s, "step1_s": steps[1]["step_time_s"], "step_s": med("step_time_s"),
            "generate_s": med(GENERATE_KEY[kind]), "score_s": med(SCORE_KEY[kind]), "train_s": med("time_train_s"),
            "response_length": med("response_length")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kinds", nargs="+", default=["ppo", "grpo"])
    ap.add_argument("--engines", nargs="+", default=["hf", "vllm"])
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--responses", type=int, default=32, help="responses per step (grpo: prompts x group)")
    ap.add_argument("--group", type=int, default=8, help="grpo.group_size")
    ap.add_argument("--prompt", type=int, default=32, help="room for the prompt in model.seq_len")
    ap.add_argument("--new", type=int, default=64, help="max new tokens")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="cluster.cpus_per_worker (torch threads per role)")
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if args.gpu else "cpu")
    print(f"model: llama {args.layers}x{args.hidden} ({args.heads} heads), {args.responses} responses x <= {args.new} "
          f"new tokens per step, {args.steps} steps; {'GPU' if args.gpu else f'CPU, {args.threads} threads per role'}")
    from orchestrator.kinds import load
    from orchestrator.runtime.ray_runtime import ray_session

    results: dict[str, dict[str, float]] = {}
    with ray_session(load("ppo", overrides("ppo", "hf", args, tempfile.gettempdir())).cluster):  # one Ray for all
        for kind in args.kinds:
            for engine in args.engines:
                r = results[f"{kind}/{engine}"] = run_job(kind, engine, args)
                print(f"{kind:4s} {engine:4s}: step {r['step_s']:7.1f} s (generate {r['generate_s']:6.1f}, score "
                      f"{r['score_s']:5.1f}, train+sync {r['train_s']:5.1f}; {r['response_length']:.0f} "
                      f"tokens/response); step 1 {r['step1_s']:.1f} s; whole job {r['job_s']:.0f} s", flush=True)
            if {f"{kind}/hf", f"{kind}/vllm"} <= set(results):
                hf, vl = results[f"{kind}/hf"], results[f"{kind}/vllm"]
                print(f"{kind}: step time hf/vllm {hf['step_s'] / vl['step_s']:.2f}x, generation "
                      f"{hf['generate_s'] / vl['generate_s']:.2f}x", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

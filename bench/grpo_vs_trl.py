"""GRPO step time and whole-job wall time: this project's ``grpo`` (Ray roles) vs TRL's GRPOTrainer.

Same tiny SFT policy (a tiny Llama trained here in-process on the arithmetic task), same task and
reward function (``orchestrator.rlhf.reward_functions:arithmetic_reward``: exact match on the final
number), same shape: 8 prompts x group size 8 = 64 completions per rollout, up to 8 new tokens
(temperature 1, top-p 1, no top-k, stop at EOS), group z-score advantages, token-mean loss ("dapo" in
TRL), clip [0.8, 1.28], KL k3 to a frozen reference as a loss term with beta 0.04, one pass over each
rollout in 2 optimizer steps of 32 completions (micro-batches of 16).

A "step" here is one rollout of 64 completions and its 2 optimizer steps: ours logs it as one step
(``step_time_s``); TRL counts optimizer steps, so its figure is the median time of two consecutive
ones (the generation happens in the first). Both figures skip the first step (warm-up). Whole-job wall
time is from the job's start (ours: Ray roles start, DeepSpeed engines build; TRL: trainer built) to its
end. Ours runs actor, reference and reward as Ray actors (one torch thread each); TRL runs everything in
one process, here with one torch thread, so each side computes on one core at a time.

Usage::

    pip install -e '.[bench]'                    # trl==1.8.0 (+ accelerate, datasets)
    python bench/grpo_vs_trl.py --steps 8        # prints both sides and the ratio
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

os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("DS_ACCELERATOR", "cpu")

PROMPTS, GROUP, MINIBATCH, MICRO, NEW_TOKENS, LR, BETA = 8, 8, 32, 16, 8, 2e-3, 0.04
REWARD = "orchestrator.rlhf.reward_functions:arithmetic_reward"


def quick_sft_policy(root: Path, steps: int = 300) -> str:
    """A tiny Llama SFT'd on the arithmetic task's demonstrations (plain torch, about a minute on CPU)."""
    from sft_policy import train_sft_policy

    return train_sft_policy(root, steps, task="arithmetic", seed=0)[2]


def run_ours(root: Path, policy: str, steps: int) -> dict:
    from orchestrator.kinds import load
    from orchestrator.kinds.grpo import run as run_grpo
    from orchestrator.training.loop import read_steps

    cfg = load("grpo", [f"workspace={root}", "run_name=ours", f"model.pretrained={policy}", "data.task=arithmetic",
                        f"reward.functions=[{{function: '{REWARD}'}}]", f"trainer.max_steps={steps}",
                        "trainer.save_every=0", "tracking.enabled=false", "trainer.export=false",
                        f"trainer.lr={LR}", f"grpo.kl_coef={BETA}", f"grpo.rollout_batch_size={PROMPTS}",
                        f"grpo.group_size={GROUP}", f"grpo.minibatch_size={MINIBATCH}",
                        f"parallel.micro_batch_size={MICRO}", f"grpo.max_new_tokens={NEW_TOKENS}",
                        "grpo.num_eval_prompts=0", "cluster.num_cpus=2"])
    t0 = time.time()
    run_grpo(cfg)
    wall = time.time() - t0
    per_step = read_steps(str(Path(cfg.output_dir)))
    later = sorted(per_step)[1:]
    phases = {k: statistics.median(per_step[s][k] for s in later)
              for k in ("time_generate_score_s", "time_logprobs_s", "time_train_s")}
    return {"step_s": statistics.median(per_step[s]["step_time_s"] for s in later), "job_wall_s": wall,
            "pass_rate_first_last": [per_step[min(per_step)]["pass_rate"], per_step[max(per_step)]["pass_rate"]],
            **phases}


def run_trl(root: Path, policy: str, steps: int) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from orchestrator.data.arithmetic import prompt_records
    from orchestrator.rlhf.reward_functions import arithmetic_reward

    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(policy, padding_side="left")
    recs = prompt_records(PROMPTS * (steps + 1), 7)
    ds = Dataset.from_dict({"prompt": [r["prompt"] for r in recs], "answer": [r["answer"] for r in recs]})
    stamps: list[float] = []
    rewards: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):  # noqa: ARG002
            stamps.append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ARG002
            if logs and "reward" in logs:
                rewards.append(float(logs["reward"]))

    updates = MINIBATCH // MICRO  # micro-batches per optimizer step
    args = GRPOConfig(output_dir=str(root / "trl"), per_device_train_batch_size=MICRO,
                      gradient_accumulation_steps=updates, steps_per_generation=PROMPTS * GROUP // MICRO,
                      num_generations=GROUP, max_completion_length=NEW_TOKENS, temperature=1.0, top_p=1.0, top_k=0,
                      beta=BETA, epsilon=0.2, epsilon_high=0.28, loss_type="dapo", scale_rewards="group",
                      num_iterations=1, learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0,
                      max_steps=steps * (PROMPTS * GROUP // MINIBATCH), use_cpu=True, report_to=[],
                      save_strategy="no", logging_steps=1, seed=0, disable_dropout=True)
    t0 = time.perf_counter()
    trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(policy), reward_funcs=[arithmetic_reward],
                          args=args, train_dataset=ds, processing_class=tok, callbacks=[Clock()])
    t_train = time.perf_counter()
    stamps.append(t_train)
    trainer.train()
    per_rollout = PROMPTS * GROUP // MINIBATCH  # optimizer steps per rollout
    rollouts = [stamps[i + per_rollout] - stamps[i] for i in range(0, len(stamps) - per_rollout, per_rollout)]
    return {"step_s": statistics.median(rollouts[1:]), "job_wall_s": time.perf_counter() - t0,
            "build_s": t_train - t0, "reward_first_last": [rewards[0], rewards[-1]] if rewards else None}


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=8, help="rollouts (64 completions each) per job")
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    a = ap.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="grpo_vs_trl_"))
    policy = quick_sft_policy(root)
    ours = run_ours(root, policy, a.steps)
    try:
        trl = run_trl(root, policy, a.steps)
    except ImportError as exc:
        trl = {"error": f"TRL's GRPOTrainer is not importable ({exc}); pip install -e '.[bench]'"}
    result = {"ours": ours, "trl": trl, "steps": a.steps,
              "shape": {"prompts": PROMPTS, "group_size": GROUP, "minibatch": MINIBATCH, "micro": MICRO,
                        "max_new_tokens": NEW_TOKENS, "beta": BETA}}
    if "step_s" in trl:
        result["ratio_ours_over_trl"] = {"step": ours["step_s"] / trl["step_s"],
                                         "job": ours["job_wall_s"] / trl["job_wall_s"]}
    print(f"{'':26}{'ours (Ray roles)':>18}{'TRL GRPOTrainer':>18}")
    print(f"{'GRPO step time (median)':26}{ours['step_s']:>17.3f}s{trl.get('step_s', float('nan')):>17.3f}s")
    print(f"{'whole job wall time':26}{ours['job_wall_s']:>17.1f}s{trl.get('job_wall_s', float('nan')):>17.1f}s")
    if "ratio_ours_over_trl" in result:
        r = result["ratio_ours_over_trl"]
        print(f"ratio ours/TRL: step time {r['step']:.2f}, whole job {r['job']:.2f}")
    else:
        print(trl["error"])
    print(json.dumps(result))
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main(sys.argv[1:])

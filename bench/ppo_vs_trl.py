"""PPO step time: this project's Ray-role PPO vs TRL's PPOTrainer, same tiny model, same task, same batch.

Both sides start from the same tiny SFT policy (trained here in-process on the demo task), score with a
reward model of the same shape (the policy's backbone plus a scalar head), and run the same PPO shape:
rollout batch 32 prompts, up to 12 new tokens (temperature 1, stop at EOS), 2 PPO epochs of 2 minibatches
of 16 (micro-batches of 8), a frozen reference and a trained value model. The figure is the median
wall time of one PPO step after the first (generation + scoring + all updates), on CPU.

Ours runs its four roles as Ray actors (one thread each) with DeepSpeed engines for actor and critic;
TRL (``trl.experimental.ppo``, pinned to 1.8.0: later TRL releases removed PPO) runs everything in one
process, here with one torch thread so that each side computes on one core at a time.

Usage::

    pip install -e '.[bench]'                 # trl==1.8.0 (+ accelerate)
    python bench/ppo_vs_trl.py --steps 8      # prints both step times and the ratio
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
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")

ROLLOUT, MINIBATCH, MICRO, EPOCHS, NEW_TOKENS, LR, KL = 32, 16, 8, 2, 12, 2e-3, 0.05


def quick_sft_policy(root: Path, steps: int = 150) -> tuple[str, str]:
    """A tiny Llama SFT'd on the demo task (plain torch, seconds) and a reward model of the same shape."""
    from orchestrator.models.heads import ScalarHeadModel
    from sft_policy import train_sft_policy

    model, tok, policy = train_sft_policy(root, steps)
    rm = root / "reward"
    ScalarHeadModel(model, kind="reward").save(rm, reward_mean=0.0, reward_std=1.0)
    tok.save_pretrained(rm)
    return policy, str(rm)


def run_ours(root: Path, policy: str, rm: str, steps: int) -> dict:
    from orchestrator.kinds import load
    from orchestrator.kinds.ppo import run as run_ppo
    from orchestrator.training.loop import read_steps

    cfg = load("ppo", [f"workspace={root}", "run_name=ours", f"model.pretrained={policy}", f"ppo.reward_model={rm}",
                       f"trainer.max_steps={steps}", "trainer.save_every=0", "tracking.enabled=false",
                       f"trainer.lr={LR}", f"ppo.kl_coef={KL}", f"ppo.rollout_batch_size={ROLLOUT}",
                       f"ppo.minibatch_size={MINIBATCH}", f"parallel.micro_batch_size={MICRO}",
                       f"ppo.ppo_epochs={EPOCHS}", f"ppo.max_new_tokens={NEW_TOKENS}", "trainer.export=false",
                       "cluster.num_cpus=2"])
    t0 = time.time()
    res = run_ppo(cfg)
    wall = time.time() - t0
    per_step = read_steps(str(Path(cfg.output_dir)))
    times = [per_step[s]["step_time_s"] for s in sorted(per_step)][1:]
    phases = {k: statistics.median(per_step[s][k] for s in sorted(per_step)[1:])
              for k in ("time_generate_s", "time_score_s", "time_train_s")}
    return {"step_s": statistics.median(times), "job_wall_s": wall, **phases, "startup": res["startup"]}


def run_trl(root: Path, policy: str, steps: int) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    from orchestrator.data.task import prompt_records

    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(policy, padding_side="left")
    prompts = [r["prompt"] for r in prompt_records(ROLLOUT * (steps + 1), 7)]
    ds = Dataset.from_dict({"input_ids": [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]})
    stamps: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):  # noqa: ARG002
            stamps.append(time.perf_counter())

    args = PPOConfig(output_dir=str(root / "trl"), per_device_train_batch_size=MICRO,
                     gradient_accumulation_steps=ROLLOUT // MICRO, num_mini_batches=ROLLOUT // MINIBATCH,
                     num_ppo_epochs=EPOCHS, response_length=NEW_TOKENS, temperature=1.0, stop_token="eos",
                     total_episodes=ROLLOUT * steps, local_rollout_forward_batch_size=ROLLOUT, learning_rate=LR,
                     kl_coef=KL, num_sample_generations=0, report_to=[], save_strategy="no", use_cpu=True,
                     logging_steps=1, seed=0)
    seq = lambda: AutoModelForSequenceClassification.from_pretrained(policy, num_labels=1)  # noqa: E731
    trainer = PPOTrainer(args=args, processing_class=tok, model=AutoModelForCausalLM.from_pretrained(policy),
                         ref_model=AutoModelForCausalLM.from_pretrained(policy), reward_model=seq(),
                         value_model=seq(), train_dataset=ds, callbacks=[Clock()])
    t0 = time.perf_counter()
    stamps.append(t0)
    trainer.train()
    deltas = [b - a for a, b in zip(stamps, stamps[1:])][1:]
    return {"step_s": statistics.median(deltas), "job_wall_s": time.perf_counter() - t0}


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    a = ap.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="ppo_vs_trl_"))
    policy, rm = quick_sft_policy(root)
    ours = run_ours(root, policy, rm, a.steps)
    try:
        trl = run_trl(root, policy, a.steps)
    except ImportError as exc:
        trl = {"error": f"TRL's PPO is not importable ({exc}); pip install -e '.[bench]'"}
    result = {"ours": ours, "trl": trl, "steps": a.steps,
              "shape": {"rollout": ROLLOUT, "minibatch": MINIBATCH, "micro": MICRO, "epochs": EPOCHS,
                        "max_new_tokens": NEW_TOKENS}}
    if "step_s" in trl:
        result["ratio_ours_over_trl"] = ours["step_s"] / trl["step_s"]
    print(f"{'':24}{'ours (Ray roles)':>18}{'TRL PPOTrainer':>18}")
    print(f"{'PPO step time (median)':24}{ours['step_s']:>17.3f}s{trl.get('step_s', float('nan')):>17.3f}s")
    print(f"{'whole job wall time':24}{ours['job_wall_s']:>17.1f}s{trl.get('job_wall_s', float('nan')):>17.1f}s")
    if "ratio_ours_over_trl" in result:
        print(f"ratio ours/TRL (step time): {result['ratio_ours_over_trl']:.2f}")
    print("ours, where the job's time went:", ", ".join(f"{k[len('startup.'):-2]} {v:.1f}s"
                                                        for k, v in ours["startup"].items()))
    print(json.dumps(result))
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main(sys.argv[1:])

"""Shared set-up of the post-training integration tests: one local Ray, one SFT policy per session.

The SFT policy (tiny Llama, demo task, 2 Ray Train workers) is built once per pytest session into
the session's base temp dir and reused by the reward-model, DPO and PPO tests.
"""

from __future__ import annotations

import os

os.environ.setdefault("RAY_AUTH_MODE", "token")  # before Ray is imported anywhere in this process

from pathlib import Path

from orchestrator.kinds import load
from orchestrator.kinds import validate

SFT_STEPS = 400
HELD_OUT_PROMPTS_SEED = 4242


def job_cfg(kind: str, ws: Path, run_name: str, *extra: str):
    cfg = load(kind, [f"workspace={ws}", f"run_name={run_name}", "cluster.num_cpus=2", *extra])
    validate(cfg)
    return cfg


def build_sft_policy(ws: Path, *extra: str) -> tuple[str, dict]:
    """Export dir of the session's SFT policy (trained once with packing and MLflow tracking; reused when
    already exported). ``ws/sft`` holds its eval.json, steps.jsonl and tracking.json. ``extra`` overrides
    (e.g. ``model=tiny_h32``) need their own ``ws``."""
    from orchestrator.kinds.sft import run as run_sft

    export = ws / "sft" / "export"
    if (export / "config.json").is_file():
        return str(export), {}
    cfg = job_cfg("sft", ws, "sft", f"trainer.max_steps={SFT_STEPS}", "trainer.global_batch_size=16",
                  "parallel.micro_batch_size=4", "trainer.save_every=0", "optim=adamw_constant",
                  "sft.packing=true", *extra)
    res = run_sft(cfg)
    return res["export_dir"], res


def held_out_prompts(n: int = 128) -> list[str]:
    from orchestrator.data.task import prompt_records

    return [r["prompt"] for r in prompt_records(n, HELD_OUT_PROMPTS_SEED)]

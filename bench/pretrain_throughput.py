"""Tokens/s of the project's pretraining vs a bare DeepSpeed loop on the same model, data and steps.

The project side is ``orchestrator run pretrain`` itself (``run_pretrain``: Ray Train worker group,
sampler, checkpoint manager, per-step metrics to MLflow), or with ``--ours worker`` the same per-worker
code without Ray (for machines without Ray, e.g. a lent GPU box). The baseline is the shortest loop that
trains the same DeepSpeed engine (same config dict, model, optimizer, schedule) on the same blocks:
``forward -> backward -> step`` per micro-batch, nothing else, on the same number of ranks (spawned
with torch.multiprocessing). Throughput is tokens per step / median step-to-step wall time after
``--warmup`` steps (robust to a shared machine's noise spikes). Prints both, the ratio and MFU.

Commands:
    python bench/pretrain_throughput.py                                   # CPU, 2 workers, tiny llama, ZeRO-2
    python bench/pretrain_throughput.py --zero 3 --steps 60
    python bench/pretrain_throughput.py --gpu --ours worker               # 1 GPU, ~1B llama, bf16 (MFU)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_cfg(args):
    """The job config, built from the schema dataclasses (no Hydra needed, so it runs on bare GPU boxes)."""
    from orchestrator.config.cluster import ClusterConfig
    from orchestrator.kinds.pretrain import PretrainConfig
    from orchestrator.config.model import ModelConfig
    from orchestrator.config.parallel import ParallelConfig
    from orchestrator.config.tracking import TrackingConfig
    from orchestrator.config.trainer import TrainerConfig

    ws = str(Path(args.workspace).resolve())
    if args.gpu:
        model = ModelConfig(arch="llama", hidden_size=2048, num_layers=16, num_heads=32, num_kv_heads=8,
                            intermediate_size=8192, vocab_size=args.vocab or 128256, seq_len=args.seq_len or 2048,
                            rope_theta=500000.0)
    else:
        model = ModelConfig(vocab_size=args.vocab or 512, seq_len=args.seq_len or 64)
    cfg = PretrainConfig(
        run_name=f"bench_z{args.zero}_{int(time.time())}", workspace=ws, output_dir="", resume="never",
        model=model,
        parallel=ParallelConfig(zero_stage=args.zero, micro_batch_size=args.micro_batch,
                                activation_checkpointing=args.activation_checkpointing),
        cluster=ClusterConfig(num_workers=args.workers, use_gpu=args.gpu, num_cpus=None if args.gpu else args.workers),
        trainer=TrainerConfig(max_steps=args.steps, global_batch_size=args.global_batch, save_every=0, export=False,
                              eval_batches=1, lr=3e-4 if args.gpu else 3e-3,
                              peak_tflops_per_worker=args.peak_tflops or (989.0 if args.gpu else 1.0)),
        tracking=TrackingConfig(uri=f"sqlite:///{ws}/mlflow.db", enabled=args.ours == "job"),
    )
    cfg = dataclasses.replace(cfg, output_dir=f"{ws}/{cfg.run_name}")
    from orchestrator.kinds import validate

    validate(cfg)
    cfg.freeze()
    return cfg


def dataset_for(cfg) -> str:
    from orchestrator.training.inputs import dataset_dir

    return str(dataset_dir(cfg, "pretrain", None))


def median_tokens_per_s(end_times: list[float], tokens_per_step: int, warmup: int) -> float:
    gaps = [b - a for a, b in zip(end_times[warmup:], end_times[warmup + 1:])]
    return tokens_per_step / statistics.median(gaps)


# ---------------------------------------------------------------- the project
def run_ours(cfg, args) -> list[float]:
    from orchestrator.training.loop import read_steps

    if args.ours == "job":
        from orchestrator.kinds.pretrain import run as run_pretrain

        run_pretrain(cfg)
    else:  # the same worker code, one process, no Ray
        if not cfg.cluster.use_gpu:
            import torch

            torch.set_num_threads(cfg.cluster.cpus_per_worker)  # as Ray's OMP_NUM_THREADS and the baseline
        _init_single_process(cfg.cluster.use_gpu)
        from orchestrator.config.plan import make_train_plan
        from orchestrator.kinds.pretrain import PretrainTask
        from orchestrator.training.reporting import LocalReporter
        from orchestrator.training.worker import WorkerArgs, run_worker

        run_worker(WorkerArgs(cfg=cfg, plan=make_train_plan(cfg), task=PretrainTask(), dataset_dir=dataset_for(cfg),
                              model_dir=None, tokenizer_dir=None, upstream={}, resume_dir=None, run_id=None,
                              extra_state={}, export_dir=None), LocalReporter())
    steps = read_steps(cfg.output_dir)
    return [steps[k]["end_time_s"] for k in sorted(steps)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _init_single_process(use_gpu: bool) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    if not use_gpu:
        os.environ["DS_ACCELERATOR"] = "cpu"
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_gpu else "gloo")


# ---------------------------------------------------------------- the baseline
def _bare_rank(rank: int, world: int, port: int, cfg, dataset_dir: str, out_file: str) -> None:
    threads = str(cfg.cluster.cpus_per_worker) if not cfg.cluster.use_gpu else "8"
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), OMP_NUM_THREADS=threads)
    if not cfg.cluster.use_gpu:
        os.environ["DS_ACCELERATOR"] = "cpu"
    import numpy as np
    import torch
    import torch.distributed as dist

    if not cfg.cluster.use_gpu:
        torch.set_num_threads(int(threads))
    else:
        torch.cuda.set_device(rank)
    dist.init_process_group("nccl" if cfg.cluster.use_gpu else "gloo", rank=rank, world_size=world)
    from orchestrator.config.plan import make_train_plan
    from orchestrator.data.shards import PackedDataset
    from orchestrator.engine.initialize import init_engine
    from orchestrator.models.build import build_causal_lm

    plan = make_train_plan(cfg)
    ds = PackedDataset(dataset_dir)
    engine = init_engine(build_causal_lm(cfg.model, cfg.trainer.seed), cfg, plan)
    device = engine.device
    mb, accum, n = plan.micro_batch_size, plan.grad_accum_steps, len(ds)
    ends = []
    for step in range(cfg.trainer.max_steps):
        for j in range(accum):
            start = ((step * accum + j) * world + rank) * mb
            ids = torch.from_numpy(np.stack([ds[(start + i) % n][:cfg.model.seq_len] for i in range(mb)])).to(device)
            loss = engine(input_ids=ids, labels=ids).loss
            engine.backward(loss)
            engine.step()
        loss.item()  # the project's loop reads the loss every step too (a device sync on GPU)
        ends.append(time.time())
    if rank == 0:
        Path(out_file).write_text(json.dumps(ends))
    dist.destroy_process_group()


def run_bare(cfg, dataset_dir: str) -> list[float]:
    import torch.multiprocessing as mp

    out = tempfile.mktemp(suffix=".json")
    world = cfg.cluster.num_workers
    # Own processes even for one rank: the baseline must not share DeepSpeed's process-group state.
    mp.spawn(_bare_rank, args=(world, _free_port(), cfg, dataset_dir, out), nprocs=world, join=True)
    return json.loads(Path(out).read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5, help="steps left out of the timing")
    p.add_argument("--zero", type=int, default=2)
    p.add_argument("--workers", type=int, default=None, help="ranks (default 2 on CPU, 1 with --gpu)")
    p.add_argument("--micro-batch", type=int, default=None)
    p.add_argument("--global-batch", type=int, default=None)
    p.add_argument("--seq-len", type=int, default=None)
    p.add_argument("--vocab", type=int, default=None)
    p.add_argument("--activation-checkpointing", action="store_true")
    p.add_argument("--gpu", action="store_true", help="1 GPU, ~1B llama (Llama-3.2-1B shape), bf16")
    p.add_argument("--peak-tflops", type=float, default=None, help="per worker, for MFU (989 = H100 bf16 dense)")
    p.add_argument("--ours", choices=("job", "worker"), default="job",
                   help="job = run_pretrain on Ray Train (default); worker = the same worker code without Ray")
    p.add_argument("--order", choices=("bare-first", "ours-first"), default="bare-first",
                   help="who runs first in the first repeat (alternates afterwards)")
    p.add_argument("--repeat", type=int, default=1, help="pairs of runs; the median ratio is reported")
    p.add_argument("--workspace", default=os.environ.get("BENCH_WORKSPACE", "outputs/bench"))
    args = p.parse_args()
    args.workers = args.workers or (1 if args.gpu else 2)
    args.micro_batch = args.micro_batch or (4 if args.gpu else 1)
    args.global_batch = args.global_batch or (args.micro_batch * args.workers * (2 if args.gpu else 4))
    if not args.gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    tokens_per_step = args.global_batch * (args.seq_len or (2048 if args.gpu else 64))
    samples: dict[str, list[float]] = {"ours": [], "bare": []}
    ratios = []
    for rep in range(args.repeat):
        cfg = make_cfg(args)  # a fresh run directory each time
        dataset_dir = dataset_for(cfg)
        order = ("bare", "ours") if (args.order == "bare-first") == (rep % 2 == 0) else ("ours", "bare")
        runs = {}
        for who in order:  # alternate who goes first: a shared machine's load drifts
            t0 = time.time()
            ends = run_bare(cfg, dataset_dir) if who == "bare" else run_ours(cfg, args)
            runs[who] = median_tokens_per_s(ends, tokens_per_step, args.warmup)
            samples[who].append(runs[who])
            print(f"[{rep}] {who}: {runs[who]:,.0f} tokens/s (wall {time.time() - t0:.1f}s incl. startup)", flush=True)
        ratios.append(runs["ours"] / runs["bare"])
    from orchestrator.training.metrics import mfu

    n = cfg.model.num_params()
    peak = cfg.trainer.peak_tflops_per_worker
    ratio = statistics.median(ratios)
    runs = {k: statistics.median(v) for k, v in samples.items()}
    print(json.dumps({
        "model_params": n, "zero_stage": args.zero, "workers": args.workers, "gpu": args.gpu, "steps": args.steps,
        "tokens_per_step": tokens_per_step, "ours": args.ours, "repeats": args.repeat,
        "ours_tokens_per_s": round(runs["ours"], 1), "bare_tokens_per_s": round(runs["bare"], 1),
        "ratios": [round(r, 4) for r in ratios], "ratio": round(ratio, 4),
        "ours_mfu": round(mfu(n, runs["ours"], peak, args.workers), 4),
        "bare_mfu": round(mfu(n, runs["bare"], peak, args.workers), 4),
    }, indent=1))
    print(f"ratio (ours / bare DeepSpeed, median of {args.repeat}): {ratio:.3f}")


if __name__ == "__main__":
    main()

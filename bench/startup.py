"""Fixed cost per job (issue #13): wall time from command to exit of a tiny training job, its start-up
breakdown, and what warm worker processes save when jobs share a Ray session.

Three measurements, each repeated ``--repeat`` times (median printed):

* ``cold``: ``orchestrator run pretrain model=tiny trainer.max_steps=20`` as a user types it (a new process,
  Ray started in-process, a new MLflow store); prints wall seconds, the job's ``startup.json`` breakdown and
  the seconds of the 20 optimizer steps themselves.
* ``chain``: ``--jobs`` such jobs one after another inside one process and one Ray session (what a pipeline
  or a sweep does), with warm worker groups (ours) against ``ORCHESTRATOR_WARM_WORKERS=0`` (a new worker
  group per job, as before); prints the per-job wall time after the first and the ratio.

* ``imports``: CPU seconds of a new process importing a training worker's preload (torch, transformers'
  Llama, DeepSpeed, the worker modules), as a new worker does: plain ``import`` statements (the baseline),
  ours with the import cache off (``ORCHESTRATOR_IMPORT_CACHE=0``: the optional imports left out only), and
  ours (optional imports left out, transformers' directory scans read from the cache a first run wrote).
  Interleaved, so drifting machine speed hits the three alike.

    python bench/startup.py                      # all three, 3 repeats
    python bench/startup.py --only cold --repeat 1
    python bench/startup.py --only imports --repeat 7
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

JOB = ["pretrain", "model=tiny", "trainer.max_steps=20"]


def cold(repeat: int) -> None:
    exe = Path(sys.executable).with_name("orchestrator")
    walls, rows = [], []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as ws:
            t0 = time.perf_counter()
            subprocess.run([str(exe), "run", *JOB, f"workspace={ws}"], check=True, capture_output=True, text=True)
            walls.append(time.perf_counter() - t0)
            out = Path(ws) / "pretrain"
            startup = json.loads((out / "startup.json").read_text())
            steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines() if line.strip()]
            rows.append({"steps_s": round(sum(s["step_time_s"] for s in steps), 2),
                         **{k[8:-2]: v for k, v in startup.items() if k.endswith("_s")}})
    print(f"cold job: wall {statistics.median(walls):.1f} s median of {repeat} ({', '.join(f'{w:.1f}' for w in walls)})")
    keys = sorted({k for r in rows for k in r})
    for k in keys:
        vals = [r[k] for r in rows if k in r]
        print(f"  {k:<16} {statistics.median(vals):7.2f} s")


def _chain_child(jobs: int, warm: bool) -> list[float]:
    """Run in a child process: ``jobs`` pretrain jobs in one Ray session; returns each job's wall seconds."""
    os.environ["ORCHESTRATOR_WARM_WORKERS"] = "1" if warm else "0"
    from orchestrator import kinds
    from orchestrator.config.cluster import ClusterConfig
    from orchestrator.runtime.ray_runtime import ray_session

    walls = []
    with tempfile.TemporaryDirectory() as ws, ray_session(ClusterConfig()):
        for i in range(jobs):
            cfg = kinds.load("pretrain", JOB[1:] + [f"workspace={ws}", f"run_name=job{i}", "tracking.enabled=false"])
            t0 = time.perf_counter()
            kinds.run(cfg)
            walls.append(time.perf_counter() - t0)
    return walls


def chain(jobs: int, repeat: int) -> None:
    per_job = {}
    for warm in (True, False):
        medians = []
        for _ in range(repeat):
            res = subprocess.run([sys.executable, __file__, "--child", str(jobs), "--warm", str(int(warm))],
                                 check=True, capture_output=True, text=True)
            walls = json.loads(res.stdout.strip().splitlines()[-1])
            medians.append(statistics.median(walls[1:]))
        per_job[warm] = statistics.median(medians)
        print(f"chain of {jobs} jobs, {'warm workers' if warm else 'new group per job'}: "
              f"{per_job[warm]:.1f} s per job after the first (median of {repeat})")
    print(f"ratio new-group / warm: {per_job[False] / per_job[True]:.2f}x")


_IMPORTS = r"""
import os, resource, sys
from orchestrator.training.driver import WORKER_PRELOAD
if sys.argv[1] == "plain":
    for name in WORKER_PRELOAD:
        __import__(name)
else:
    from orchestrator.runtime.preload import import_modules
    import_modules(WORKER_PRELOAD)
r = resource.getrusage(resource.RUSAGE_SELF)
print(r.ru_utime + r.ru_stime)
"""


def imports(repeat: int) -> None:
    cpu: dict[str, list[float]] = {"plain": [], "no cache": [], "ours": []}
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "DS_ACCELERATOR": "cpu"}
        subprocess.run([sys.executable, "-c", _IMPORTS, "ours"], check=True, capture_output=True,
                       env={**env, "ORCHESTRATOR_IMPORT_CACHE": cache})  # the first worker writes the cache
        for _ in range(repeat):
            for mode, value in (("plain", cache), ("no cache", "0"), ("ours", cache)):
                res = subprocess.run([sys.executable, "-c", _IMPORTS, mode], check=True, capture_output=True, text=True,
                                     env={**env, "ORCHESTRATOR_IMPORT_CACHE": value})
                cpu[mode].append(float(res.stdout.strip().splitlines()[-1]))
    med = {k: statistics.median(v) for k, v in cpu.items()}
    for mode, vals in cpu.items():
        print(f"worker preload imports, {mode:<8}: {med[mode]:.2f} CPU-s median of {repeat} "
              f"({', '.join(f'{v:.2f}' for v in vals)})")
    print(f"ratio plain / ours: {med['plain'] / med['ours']:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=3)
    ap.add_argument("--only", choices=("cold", "chain", "imports"))
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--warm", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_chain_child(args.child, bool(args.warm))))
        return
    if args.only in (None, "cold"):
        cold(args.repeat)
    if args.only in (None, "chain"):
        chain(args.jobs, args.repeat)
    if args.only in (None, "imports"):
        imports(args.repeat)


if __name__ == "__main__":
    main()

"""Near-dedup throughput, peak memory and F1: our Ray Data pipeline vs datatrove's MinHash pipeline.

Both run with their default MinHash settings (word 5-grams, 14 bands x 8 rows) on the same planted
corpus (originals plus exact, reformatted and word-edited copies; :func:`planted_corpus`), on 2
local worker processes each. Ground truth: a document should be removed iff an earlier document has
a true shingle Jaccard >= 0.8. Each pipeline runs in its own child process; peak memory is the
largest sum of PSS (proportional set size: shared pages such as Ray's object store are split
between the processes mapping them, not counted once per process) over the child's whole process
tree (Ray's GCS, raylet and workers included), sampled every 0.2 s. Prints one table and the ratios against datatrove.

    pip install -e '.[bench]'   # datatrove + its English word tokenizer (spaCy) + orjson
    python bench/dedup_vs_datatrove.py --originals 1000 --scales 1 10

Datatrove is optional: ``--only ours`` needs only this project (and psutil). ``--set KEY=VALUE``
passes extra config overrides to ours (e.g. ``data.minhash.verification=estimate``).

Ours here = stage 1 (read, normalise, MinHash signature) as a Ray Data map over input partitions, the
LSH/verification/connected-components file-backed shuffles (Ray Data tasks), and stage 3 (write kept
docs and the removal manifest); the quality filters, PII, exact dedup and tokenisation are switched
off so that both sides do the same work.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
NUM_FILES = 8


def make_corpus(out: Path, originals: int, seed: int = 0) -> tuple[int, set[str]]:
    """Write the planted corpus as NUM_FILES JSONL files; returns (docs, ids that should be removed)."""
    from orchestrator.data.corpus import planted_corpus
    from orchestrator.data.minhash import jaccard, shingles
    from orchestrator.data.text import normalize_text

    docs = planted_corpus(originals, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    files = [open(out / f"part-{i:02d}.jsonl", "w") for i in range(NUM_FILES)]
    groups: dict[str, list[int]] = defaultdict(list)
    per_file = -(-len(docs) // NUM_FILES)
    for i, d in enumerate(docs):  # contiguous chunks keep each original before its copies
        files[i // per_file].write(json.dumps({"id": d["id"], "text": d["text"]}) + "\n")
        groups[d["origin"]].append(i)
    for f in files:
        f.close()
    truth: set[str] = set()
    for members in groups.values():
        sh = {i: shingles(normalize_text(docs[i]["text"]), 5) for i in members}
        for k, i in enumerate(members):
            if any(jaccard(sh[i], sh[j]) >= 0.8 for j in members[:k]):
                truth.add(docs[i]["id"])
    return len(docs), truth


def run_ours(input_dir: str, work: str, overrides: list[str] = ()) -> dict:
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    from orchestrator.kinds import load
    from orchestrator.data import job
    from orchestrator.data.finalize import finalize_partition
    from orchestrator.data.readers import plan_partitions
    from orchestrator.data.shuffle import map_tasks
    from orchestrator.runtime.ray_runtime import ray_session

    # the schema's 32 MiB input partitions (the demo_corpus preset's 256 KiB would make 450 tiny tasks)
    cfg = load("data_prep", [f"workspace={work}", "run_name=bench", f"data.input={input_dir}/*.jsonl",
                             "data.partition_kb=32768",
                             "data.language.enabled=false", "data.gopher_quality.enabled=false",
                             "data.gopher_repetition.enabled=false", "data.c4.enabled=false",
                             "data.fineweb.enabled=false", "data.pii.enabled=false",
                             "data.exact_dedup.enabled=false", "tracking.enabled=false", "cluster.num_cpus=2",
                             *overrides])
    t0 = time.time()
    with ray_session(cfg.cluster):
        t1 = time.time()
        out = Path(cfg.output_dir)
        parts = plan_partitions(cfg.data.input, "auto", cfg.data.partition_kb << 10)
        work_dir = out / "work"
        work_dir.mkdir(parents=True, exist_ok=True)
        s1 = job._stage1(parts, cfg, work_dir)
        near = job._stage2(parts, cfg, work_dir, sum(s["docs_out"] for s in s1)).get("near", {})
        map_tasks(finalize_partition, [{"index": p.index} for p in parts], cfg=cfg.data,
                  work=str(work_dir), out=str(out))
        t2 = time.time()
    removed = [json.loads(line)["id"] for f in sorted((out / "removals").glob("*.jsonl"))
               for line in open(f) if '"near_dedup"' in line]
    return {"seconds": t2 - t1, "seconds_with_startup": t2 - t0, "removed": removed, "near": near}


def _patch_datatrove_xxhash() -> None:
    """datatrove 0.10 passes str to xxhash, which xxhash >= 4 refuses: encode first (same hashes)."""
    import xxhash

    import datatrove.utils.hashes.xxhash as dx

    dx.xxhash32 = lambda d: xxhash.xxh32_intdigest(d.encode() if isinstance(d, str) else d)
    dx.xxhash64 = lambda d: xxhash.xxh64_intdigest(d.encode() if isinstance(d, str) else d)


def run_datatrove(input_dir: str, work: str) -> dict:
    import gzip

    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster,
                                                  MinhashDedupFilter, MinhashDedupSignature)
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers.jsonl import JsonlWriter

    _patch_datatrove_xxhash()
    cfg = MinhashConfig()  # defaults: 5-grams, 14 buckets x 8 hashes, 64-bit xxhash
    w = Path(work)
    t0 = time.time()
    s1 = LocalPipelineExecutor(pipeline=[JsonlReader(input_dir), MinhashDedupSignature(output_folder=str(w / "sigs"), config=cfg)],
                               tasks=NUM_FILES, workers=2, logging_dir=str(w / "logs/s1"))
    s2 = LocalPipelineExecutor(pipeline=[MinhashDedupBuckets(input_folder=str(w / "sigs"), output_folder=str(w / "buckets"), config=cfg)],
                               tasks=cfg.num_buckets, workers=2, logging_dir=str(w / "logs/s2"), depends=s1)
    s3 = LocalPipelineExecutor(pipeline=[MinhashDedupCluster(input_folder=str(w / "buckets"), output_folder=str(w / "remove"), config=cfg)],
                               tasks=1, logging_dir=str(w / "logs/s3"), depends=s2)
    s4 = LocalPipelineExecutor(pipeline=[JsonlReader(input_dir), MinhashDedupFilter(input_folder=str(w / "remove"),
                                                                                    exclusion_writer=JsonlWriter(str(w / "removed"))),
                                         JsonlWriter(str(w / "kept"))],
                               tasks=NUM_FILES, workers=2, logging_dir=str(w / "logs/s4"), depends=s3)
    s4.run()
    t1 = time.time()
    removed = [json.loads(line)["id"] for f in sorted((w / "removed").glob("*.gz")) for line in gzip.open(f, "rt")]
    return {"seconds": t1 - t0, "seconds_with_startup": t1 - t0, "removed": removed}


def measure(kind: str, input_dir: Path, work: Path, object_store_fraction: float | None = None,
            overrides: list[str] = ()) -> dict:
    """Run one pipeline in a child process; peak PSS summed over its process tree."""
    import psutil

    result_path = work / f"{kind}.json"
    env = dict(os.environ)
    if object_store_fraction is not None:  # a bounded object store spills shuffle blocks to disk
        env["RAY_DEFAULT_OBJECT_STORE_MEMORY_PROPORTION"] = str(object_store_fraction)
    proc = subprocess.Popen([sys.executable, __file__, "--child", kind, "--input", str(input_dir), "--work", str(work),
                             "--result", str(result_path), *[f"--set={o}" for o in overrides]],
                            stdout=subprocess.DEVNULL, stderr=open(work / f"{kind}.stderr.log", "w"), env=env)
    peak = 0
    at_peak: list[tuple[str, int]] = []
    root = psutil.Process(proc.pid)

    def sample() -> None:
        nonlocal peak, at_peak
        while proc.poll() is None:
            total = 0
            procs: list[tuple[str, int]] = []
            try:
                for p in [root, *root.children(recursive=True)]:
                    try:
                        pss = p.memory_full_info().pss  # shared pages (object store) counted once
                        total += pss
                        procs.append((p.name(), pss))
                    except psutil.Error:
                        pass
            except psutil.Error:
                pass
            if total > peak:
                peak, at_peak = total, procs
            time.sleep(0.2)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    rc = proc.wait()
    t.join()
    if rc != 0:
        raise RuntimeError(f"{kind} failed with exit code {rc}; see {work / f'{kind}.stderr.log'}")
    res = json.loads(result_path.read_text())
    res["peak_pss_mib"] = peak / 2**20
    # who held the memory at the peak: the five largest processes (name, MiB)
    res["peak_top"] = [(n, round(b / 2**20)) for n, b in sorted(at_peak, key=lambda x: -x[1])[:5]]
    return res


def f1(removed: set[str], truth: set[str]) -> tuple[float, float, float]:
    tp = len(removed & truth)
    p = tp / max(len(removed), 1)
    r = tp / max(len(truth), 1)
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--originals", type=int, default=1000)
    ap.add_argument("--scales", type=int, nargs="+", default=[1, 10])
    ap.add_argument("--out", default=str(REPO / "outputs" / "bench_dedup"))
    ap.add_argument("--only", choices=["ours", "datatrove"], default=None)
    ap.add_argument("--object-store-fraction", type=float, default=None,
                    help="Ray object store as a fraction of RAM for ours (default: Ray's own, 0.3). The dedup "
                         "shuffles pass files, not blocks, so the object store holds only small results")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra config override for ours, e.g. --set data.minhash.verification=estimate")
    ap.add_argument("--child", choices=["ours", "datatrove"])
    ap.add_argument("--input")
    ap.add_argument("--work")
    ap.add_argument("--result")
    a = ap.parse_args()
    if a.child:
        res = run_ours(a.input, a.work, a.set) if a.child == "ours" else run_datatrove(a.input, a.work)
        Path(a.result).write_text(json.dumps(res))
        return
    import shutil

    rows = []
    for scale in a.scales:
        base = Path(a.out) / f"x{scale}"
        shutil.rmtree(base, ignore_errors=True)
        n_docs, truth = make_corpus(base / "input", a.originals * scale)
        size_mib = sum(f.stat().st_size for f in (base / "input").glob("*.jsonl")) / 2**20
        for kind in [k for k in ("ours", "datatrove") if a.only in (None, k)]:
            work = base / kind
            work.mkdir(parents=True)
            res = measure(kind, base / "input", work, a.object_store_fraction if kind == "ours" else None,
                          a.set if kind == "ours" else [])
            p, r, f = f1(set(res["removed"]), truth)
            rows.append({"scale": scale, "docs": n_docs, "MiB": round(size_mib, 1), "pipeline": kind,
                         "seconds": round(res["seconds"], 1), "docs_per_s": round(n_docs / res["seconds"]),
                         "peak_pss_mib": round(res["peak_pss_mib"]), "precision": round(p, 4),
                         "recall": round(r, 4), "f1": round(f, 4), "peak_top": res["peak_top"],
                         "near": res.get("near")})
            print(json.dumps(rows[-1]), flush=True)
    print("\n| scale | docs | MiB | pipeline | seconds | docs/s | peak PSS MiB | precision | recall | F1 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['scale']}x | {r['docs']} | {r['MiB']} | {r['pipeline']} | {r['seconds']} | {r['docs_per_s']} | "
              f"{r['peak_pss_mib']} | {r['precision']} | {r['recall']} | {r['f1']} |")
    by = {(r["scale"], r["pipeline"]): r for r in rows}
    for scale in a.scales:
        if (scale, "ours") in by and (scale, "datatrove") in by:
            o, d = by[(scale, "ours")], by[(scale, "datatrove")]
            print(f"ratio ours/datatrove at {scale}x: docs/s {o['docs_per_s'] / d['docs_per_s']:.2f}, "
                  f"peak PSS {o['peak_pss_mib'] / d['peak_pss_mib']:.2f}, F1 {o['f1']:.4f} vs {d['f1']:.4f}")
    if len(a.scales) > 1:
        lo, hi = min(a.scales), max(a.scales)
        for kind in ("ours", "datatrove"):
            if (lo, kind) in by and (hi, kind) in by:
                print(f"{kind}: peak PSS x{by[(hi, kind)]['peak_pss_mib'] / by[(lo, kind)]['peak_pss_mib']:.2f} "
                      f"for x{hi // lo} documents")


if __name__ == "__main__":
    main()

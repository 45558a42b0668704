"""data_prep end to end on a real local Ray (Ray Data maps and shuffles) and a real MLflow store.

* the generated demo corpus goes through every step; the packed output is read by ``PackedDataset``;
  planted junk, copies and malformed lines end up where they should; the distributed dedup
  (Ray Data group-bys, large/small-star components) gives exactly the in-memory driver's removals;
* a rerun skips every completed partition; an interrupted run (lost markers) redoes only those;
* the sft record format; the distributed components on a long path (many rounds);
* damaged input files quarantined beside good ones, and decontamination against an evaluation file.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "token")  # before Ray is imported anywhere in this process

import numpy as np
import pyarrow.dataset as pads
import pytest

from orchestrator.kinds import load
from tests.conftest import REPO, orchestrator_cmd

NUM_DOCS = 300


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return tmp_path_factory.mktemp("data_prep_ws")


def cfg_for(ws, *extra):
    return load("data_prep", [f"workspace={ws}", "run_name=dp", f"data.demo_num_docs={NUM_DOCS}",
                              "data.partition_kb=128", "data.shuffle_partitions=3", "cluster.num_cpus=2", *extra])


def read_jsonl_dir(path):
    return [json.loads(line) for f in sorted(path.glob("*.jsonl")) for line in f.read_text().splitlines()]


@pytest.fixture(scope="module")
def first_run(ray_local, ws):
    from orchestrator.data.job import run_data_prep

    cfg = cfg_for(ws)
    return cfg, run_data_prep(cfg)


@pytest.mark.slow
def test_end_to_end_packed_dataset(first_run):
    from mlflow import MlflowClient

    from orchestrator.data.shards import PackedDataset

    cfg, res = first_run
    out = cfg.output_dir
    ds = PackedDataset(res["dataset_dir"])
    assert ds.digest == res["manifest_digest"] and len(ds) > 100
    block = ds[0]
    assert block.shape == (cfg.data.seq_len,) and block.dtype == np.int64
    eos = ds.manifest["eos_token_id"]
    assert sum(int((ds[i] == eos).sum()) for i in range(len(ds))) >= res["docs_kept"] - 2  # one EOS per doc
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(ds.tokenizer_dir))
    assert len(tok) <= cfg.data.vocab_size and "the" in tok.decode(ds[1].tolist())

    stats = json.loads(open(res["stats_path"]).read())
    assert stats["partitions"]["total"] >= 3  # the demo is split, so the maps ran in parallel
    steps = {s["step"]: s for s in stats["steps"]}
    assert list(steps) == ["normalize", "gopher_quality", "gopher_repetition", "c4", "fineweb", "pii",
                           "exact_dedup", "near_dedup"]
    for a, b in zip(stats["steps"], stats["steps"][1:]):
        assert a["docs_out"] == b["docs_in"]
    assert steps["near_dedup"]["docs_out"] == res["docs_kept"] == stats["docs_kept"]
    assert res["steps"]["exact_dedup"]["in"] - res["steps"]["exact_dedup"]["out"] == steps["exact_dedup"]["removed"] > 0

    # planted content: junk removed by filters, copies by dedup, malformed lines quarantined
    removals = {r["id"]: r for r in read_jsonl_dir(Path(out) / "removals")}
    kept = read_jsonl_dir(Path(out) / "kept")
    assert len(kept) == res["docs_kept"] and len(removals) == stats["docs_in"] - res["docs_kept"]
    junk = [i for i in removals if i.startswith("junk-")]
    assert len(junk) >= 18 and all(removals[i]["step"] in ("gopher_quality", "gopher_repetition", "c4") for i in junk)
    assert not [k for k in kept if k["id"].startswith("junk-")]
    copies = [i for i in removals if i.startswith(("exact-", "reformat-"))]
    assert copies and all(removals[i]["step"] == "exact_dedup" and removals[i]["duplicate_of"] for i in copies)
    near = [r for r in removals.values() if r["step"] == "near_dedup"]
    assert near and all(r["duplicate_of"] for r in near)
    assert res["quarantined"] == stats["quarantined"] == 4
    q = [json.loads(x) for x in open(os.path.join(out, "quarantine.jsonl"))]
    assert sorted(x["reason"] for x in q) == ["bad_json", "missing_text", "non_utf8", "not_an_object"]
    assert all(k["id"] for k in kept) and "<EMAIL>" in "".join(k["text"] for k in kept)

    # MLflow: metrics, stats/plot artifacts and the dataset as an input with its digest
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    run = client.get_run(res["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["job_kind"] == "data_prep"
    assert run.data.metrics["data_prep.docs_kept"] == res["docs_kept"]
    assert run.data.metrics["data_prep.near_dedup.removed_fraction"] > 0
    digests = [i.dataset.digest for i in run.inputs.dataset_inputs]
    assert res["manifest_digest"][:36] in digests
    arts = {a.path for a in client.list_artifacts(res["run_id"], "data_prep")}
    assert "data_prep/stats.json" in arts and "data_prep/plots" in arts
    # the job's phase breakdown: result, startup.json and MLflow agree; Ray's start is the only start-up
    startup = res["startup"]
    assert json.loads((Path(out) / "startup.json").read_text()) == startup
    assert {k: run.data.metrics[k] for k in startup} == pytest.approx(startup)
    phases = [k[len("startup."):-2] for k in startup if k != "startup.to_first_step_s"]
    assert phases == ["inputs", "tracking_start", "ray_start", "decontam_index", "filter", "dedup", "finalize",
                      "dataset", "ray_stop", "plots"]
    assert startup["startup.to_first_step_s"] == pytest.approx(
        startup["startup.inputs_s"] + startup["startup.tracking_start_s"] + startup["startup.ray_start_s"], abs=1e-2)
    assert startup["startup.filter_s"] > 0 and startup["startup.dedup_s"] > 0


@pytest.mark.slow
def test_distributed_dedup_equals_in_memory_driver(first_run):
    from orchestrator.data.dedup import dedup_local

    cfg, res = first_run
    work = os.path.join(res["output_dir"], "work")
    t = pads.dataset(os.path.join(work, "stage1", "docs"), format="parquet").to_table()
    from orchestrator.data.shingle_store import ShingleStore

    orders = np.asarray(t.column("order"))
    store = ShingleStore(os.path.join(work, "stage1", "shingles"))  # exact verification (the default)
    local = dedup_local(orders, t.column("id").to_pylist(), t.column("exact_key").to_pylist(),
                        t.column("sig").to_pylist(), cfg.data.minhash, shingle_sets=[store.get(int(o)) for o in orders])
    removals = read_jsonl_dir(Path(res["output_dir"]) / "removals")
    ray_dedup = {r["order"]: (r["step"], r["duplicate_of"]) for r in removals if r["step"].endswith("dedup")}
    assert ray_dedup == local and len(local) > 20


@pytest.mark.slow
def test_rerun_skips_and_interrupted_run_continues(first_run, ws):
    from orchestrator.data.job import run_data_prep

    cfg, res = first_run
    again = run_data_prep(cfg_for(ws))
    stats = json.loads(open(again["stats_path"]).read())
    total = stats["partitions"]["total"]
    assert stats["partitions"]["stage1_skipped"] == total and stats["partitions"]["stage3_skipped"] == total
    assert again["manifest_digest"] == res["manifest_digest"] and again["run_id"] == res["run_id"]
    # an interruption: partition 1 lost its markers and the dataset was never written
    work = os.path.join(res["output_dir"], "work")
    os.remove(os.path.join(work, "stage1", "done", "part-00001"))
    os.remove(os.path.join(work, "stage3", "done", "part-00001"))
    os.remove(os.path.join(res["dataset_dir"], "manifest.json"))
    resumed = run_data_prep(cfg_for(ws))
    stats = json.loads(open(resumed["stats_path"]).read())
    assert stats["partitions"]["stage1_skipped"] == total - 1 and stats["partitions"]["stage3_skipped"] == total - 1
    assert resumed["manifest_digest"] == res["manifest_digest"]
    # an interruption inside near dedup: the step is unfinished and one removal bucket lost its marker
    # and files; the rerun redoes that bucket only and every partition's stage 3
    near = Path(work) / "dedup" / "near"
    (Path(work) / "dedup" / "near.done").unlink()
    (near / "removals" / "_markers" / "gather-00001").unlink()
    lost = sorted(near.glob("removals/part=*/b-00001.parquet"))
    kept_files = {p: p.stat().st_mtime_ns for p in near.glob("removals/part=*/b-0000[02].parquet")}
    assert lost and kept_files
    for p in lost:
        p.unlink()
    for p in Path(work).glob("stage3/done/*"):
        p.unlink()
    again = run_data_prep(cfg_for(ws))
    assert again["manifest_digest"] == res["manifest_digest"] and all(p.exists() for p in lost)
    assert {p: p.stat().st_mtime_ns for p in kept_files} == kept_files
    assert sorted(p.name for p in near.iterdir()) == ["removals"]  # scratch removed once the step finished


@pytest.mark.slow
def test_sft_records_format(ray_local, tmp_path):
    from orchestrator.data.job import run_data_prep
    from orchestrator.data.shards import load_manifest, read_records

    cfg = load("data_prep", [f"workspace={tmp_path}", "run_name=sft_prep", "data.format=sft", "data.demo_num_docs=200",
                             "tracking.enabled=false", "cluster.num_cpus=2"])
    res = run_data_prep(cfg)
    recs = read_records(res["dataset_dir"])
    assert load_manifest(res["dataset_dir"])["format"] == "sft" and res["quarantined"] == 3
    assert len(recs) == res["docs_kept"] and all(set(r) >= {"id", "prompt", "response"} for r in recs)
    assert len({(r["prompt"], r["response"]) for r in recs}) == len(recs)  # planted copies removed
    assert all(r["prompt"].startswith("list ") for r in recs)
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(os.path.join(res["dataset_dir"], "tokenizer")).eos_token_id is not None


@pytest.mark.slow
def test_distributed_components_on_a_long_path(ray_local, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from orchestrator.data.dedup import connected_components

    n = 300
    perm = np.random.default_rng(0).permutation(n)
    files = []
    for k, chunk in enumerate(np.array_split(np.arange(n - 1), 4)):  # the path's edges over 4 files
        files.append(str(tmp_path / f"edges-{k}.parquet"))
        pq.write_table(pa.table({"a": perm[chunk], "b": perm[chunk + 1]}), files[-1])
    stars, rounds = connected_components(files, tmp_path / "cc", n - 1, bucket_mb=1, max_iterations=40,
                                         fixed_buckets=4)
    rows = pa.concat_tables([pq.read_table(f) for f in stars])
    assert rounds > 2 and rows.num_rows == n - 1
    assert set(rows.column("a").to_pylist()) == {0} and set(rows.column("b").to_pylist()) == set(range(1, n))


@pytest.mark.slow
def test_damaged_files_and_decontamination(ray_local, tmp_path):
    """A truncated .jsonl.gz and .jsonl.zst and a corrupt .parquet beside good files, with a benchmark
    passage planted in a good file: the run finishes, keeps the good records, quarantines and counts
    the damaged files, removes the contaminated documents; under on_bad_file=fail one ConfigError names
    the first damaged file."""
    from orchestrator.config import ConfigError
    from orchestrator.data.corpus import write_jsonl
    from orchestrator.data.job import run_data_prep
    from tests.unit.data.test_bad_files import write_damaged_inputs
    from tests.unit.data.test_decontam import PASSAGE, planted_docs

    inp = tmp_path / "in"
    inp.mkdir()
    good_ids = write_damaged_inputs(inp)
    write_jsonl(inp / "f-planted.jsonl", planted_docs())
    write_jsonl(tmp_path / "gsm8k.jsonl", [{"question": PASSAGE}])
    args = [f"workspace={tmp_path}", "run_name=damaged", f"data.input={inp}", "tracking.enabled=false",
            "cluster.num_cpus=2", f"data.decontaminate.paths=[{tmp_path / 'gsm8k.jsonl'}]", "data.exact_dedup.enabled=false",
            "data.minhash.enabled=false"]
    res = run_data_prep(load("data_prep", args))
    out = Path(res["output_dir"])
    stats = json.loads((out / "stats.json").read_text())
    assert res["bad_files"] == stats["bad_files"] == 3
    assert sorted(Path(b["path"]).name for b in stats["bad_file_list"]) == ["c-cut.jsonl.gz", "d-cut.jsonl.zst",
                                                                         "e-random.parquet"]
    q = [json.loads(x) for x in (out / "quarantine.jsonl").read_text().splitlines()]
    assert sorted(Path(x["source"]).name for x in q if x["reason"] == "unreadable_file") == \
        ["c-cut.jsonl.gz", "d-cut.jsonl.zst", "e-random.parquet"]
    kept = {k["id"] for k in read_jsonl_dir(out / "kept")}
    assert set(good_ids) <= kept and {"clean", "near-miss", "reordered"} <= kept
    assert any(k.startswith("z") for k in kept) and any(k.startswith("s") for k in kept)  # read before the cut
    removals = {r["id"]: r for r in read_jsonl_dir(out / "removals")}
    assert {i for i, r in removals.items() if r["step"] == "decontaminate"} == {"verbatim", "reformatted", "embedded"}
    assert removals["verbatim"]["benchmark"] == "gsm8k" and len(removals["verbatim"]["ngram"].split()) == 13
    assert {s["step"]: s["removed"] for s in stats["steps"]}["decontaminate"] == 3
    # fail: the corrupt Parquet footer is refused while planning (before Ray; see the CLI test below);
    # without it, the truncated gzip stream is found by a stage-1 task and named by one ConfigError
    with pytest.raises(ConfigError, match=r"^data.input: .*e-random.parquet is damaged .*ArrowInvalid"):
        run_data_prep(load("data_prep", [*args, "data.on_bad_file=fail", "run_name=damaged_fail"]))
    (inp / "e-random.parquet").unlink()
    with pytest.raises(ConfigError, match=r"^data.input: .*c-cut.jsonl.gz is damaged .*EOFError"):
        run_data_prep(load("data_prep", [*args, "data.on_bad_file=fail", "run_name=damaged_fail"]))


def test_corrupt_parquet_refused_by_cli_under_fail(tmp_path):
    from tests.unit.data.test_bad_files import write_damaged_inputs

    write_damaged_inputs(tmp_path)
    r = subprocess.run(orchestrator_cmd() + ["run", "data_prep", f"workspace={tmp_path}", f"data.input={tmp_path}",
                                             "data.on_bad_file=fail"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 2, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: data.input:") and "e-random.parquet is damaged" in last
    assert "Traceback" not in r.stderr


def test_empty_input_refused_by_cli(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    r = subprocess.run(orchestrator_cmd() + ["run", "data_prep", f"workspace={tmp_path}", f"data.input={empty}"],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1].startswith("error: data.input:") and "empty" in r.stderr

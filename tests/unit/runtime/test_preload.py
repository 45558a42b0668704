"""Worker preload: the optional imports stay out, and the real packages are there afterwards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]

CODE = r"""
import hashlib, importlib.metadata, json, sys
calls = []
real = importlib.metadata.packages_distributions
counting = importlib.metadata.packages_distributions = lambda: calls.append(1) or real()
from orchestrator.runtime.preload import import_modules
import_modules(("deepspeed", "transformers.generation.candidate_generator", "transformers.models.llama.modeling_llama",
                "no_such_module_xyz"))
assert "deepspeed" in sys.modules and "transformers.generation.candidate_generator" in sys.modules
assert "mlflow" not in sys.modules, "mlflow imported"
assert "sklearn" not in sys.modules and "sklearn.metrics" not in sys.modules, "sklearn left behind"
assert "scipy" not in sys.modules and "scipy.optimize" not in sys.modules, "scipy left behind"
assert importlib.metadata.packages_distributions is counting  # put back as it was
import transformers
from transformers.utils import import_utils
structure = sorted(transformers._class_to_module.items())
stats = {"scans": len(calls), "structure_scans": import_utils.create_import_structure_from_path.cache_info().misses,
         "structure": hashlib.sha256(repr(structure).encode()).hexdigest(), "classes": len(structure),
         "mapping": import_utils.PACKAGE_DISTRIBUTION_MAPPING == real()}
if sys.argv[1:] == ["--stats-only"]:
    print(json.dumps(stats))
    sys.exit(0)
from deepspeed.autotuning import autotuner
assert autotuner.has_mlflow is False
from transformers.generation import candidate_generator as cg
import numpy as np
fpr, tpr, thr = cg.roc_curve(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))  # the real one, on call
import sklearn.metrics
assert sklearn.metrics.__file__ and len(fpr) == len(tpr) == len(thr) > 0
from transformers.loss import loss_for_object_detection as od
rows, cols = od.linear_sum_assignment(np.array([[4.0, 1.0], [2.0, 0.5]]))  # the real one, on call
assert rows.tolist() == [0, 1] and cols.tolist() == [1, 0]
import scipy.optimize
assert scipy.optimize.__file__
import mlflow
assert mlflow.__file__
print(json.dumps(stats))
"""


def _worker(cache: Path, *args: str) -> dict:
    """A new process importing a worker's preload with ``cache`` as its import cache: its scan statistics."""
    r = subprocess.run([sys.executable, "-c", CODE, *args], capture_output=True, text=True, timeout=300, cwd=cache.parent,
                       env={**os.environ, "DS_ACCELERATOR": "cpu", "ORCHESTRATOR_IMPORT_CACHE": str(cache),
                            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])})
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def first_worker(tmp_path_factory):
    cache = tmp_path_factory.mktemp("work") / "imports"  # the process runs in .../work ('' on its sys.path)
    return cache, _worker(cache)


def test_preload_skips_mlflow_sklearn_and_scipy_and_leaves_the_real_packages_importable(first_worker):
    _, stats = first_worker  # CODE asserted the packages; the empty cache: the real scans ran and were written
    assert stats["scans"] == 1 and stats["structure_scans"] > 0 and stats["mapping"] and stats["classes"] > 1000


def test_a_second_worker_takes_transformers_scans_from_the_cache_with_the_same_result(first_worker):
    cache, first = first_worker
    files = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    assert any(n.startswith("packages_distributions-") for n in files)
    assert sum(n.startswith("transformers_structure-") for n in files) >= 2  # transformers and transformers.models
    (cache.parent / "written_meanwhile.txt").write_text("x")  # a directory on sys.path changes; no distribution
    second = _worker(cache, "--stats-only")  # neither scan runs; the lazy modules and the distribution mapping are the same
    assert second["scans"] == 0 and second["structure_scans"] == 0 and second["mapping"]
    assert second["structure"] == first["structure"] and second["classes"] == first["classes"]
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == files


def test_the_training_driver_imports_neither_torch_nor_transformers():
    """The driver only reads files and talks to Ray and MLflow; torch (~2 s of CPU) and transformers (~5 s)
    in it competed with the starting workers for the same cores (issue #13)."""
    code = ("import sys; import orchestrator.training.driver, orchestrator.kinds.pretrain, orchestrator.kinds.sft; "
            "print(sorted(m for m in ('torch', 'transformers', 'deepspeed') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[]"



def test_the_import_cache_rescans_a_corrupt_file_and_keys_on_what_the_scan_reads(tmp_path, monkeypatch):
    from orchestrator.runtime import import_cache

    monkeypatch.setenv(import_cache.CACHE_ENV, str(tmp_path))
    computed = []

    def compute():
        computed.append(1)
        return {"pkg": ["dist"]}

    def get(key):
        return import_cache._cached("t", key, compute, lambda v: v, dict)

    assert get(("a",)) == {"pkg": ["dist"]} and len(computed) == 1
    assert get(("a",)) == {"pkg": ["dist"]} and len(computed) == 1  # read back
    (path,) = tmp_path.iterdir()
    path.write_text("{not json")
    assert get(("a",)) == {"pkg": ["dist"]} and len(computed) == 2  # scanned again and rewritten
    assert json.loads(path.read_text()) == {"pkg": ["dist"]}
    assert get(("b",)) == {"pkg": ["dist"]} and len(computed) == 3  # another key, another file
    # a value of a shape the encoder does not know is returned but not cached
    assert import_cache._cached("u", ("a",), lambda: {frozenset({"x"}): [1]}, import_cache._encode_structure,
                                import_cache._decode_structure) == {frozenset({"x"}): [1]}
    assert not list(tmp_path.glob("u-*"))
    structure = {frozenset({"torch"}): {"llama.modeling_llama": {"LlamaModel"}}, frozenset(): {"a.b": set()}}
    assert import_cache._decode_structure(json.loads(json.dumps(import_cache._encode_structure(structure)))) == structure
    monkeypatch.setenv(import_cache.CACHE_ENV, "0")
    assert import_cache.cache_dir() is None and get(("a",)) and len(computed) == 4  # off: always scanned

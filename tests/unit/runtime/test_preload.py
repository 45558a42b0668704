"""Worker preload: the optional imports stay out, and the real packages are there afterwards."""

from __future__ import annotations

import subprocess
import sys

CODE = r"""
import sys
from orchestrator.runtime.preload import import_modules
import_modules(("deepspeed", "transformers.generation.candidate_generator", "no_such_module_xyz"))
assert "deepspeed" in sys.modules and "transformers.generation.candidate_generator" in sys.modules
assert "mlflow" not in sys.modules, "mlflow imported"
assert "sklearn" not in sys.modules and "sklearn.metrics" not in sys.modules, "sklearn left behind"
from deepspeed.autotuning import autotuner
assert autotuner.has_mlflow is False
from transformers.generation import candidate_generator as cg
import numpy as np
fpr, tpr, thr = cg.roc_curve(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))  # the real one, on call
import sklearn.metrics
assert sklearn.metrics.__file__ and len(fpr) == len(tpr) == len(thr) > 0
import mlflow
assert mlflow.__file__
print("ok")
"""


def test_preload_skips_mlflow_and_sklearn_and_leaves_the_real_packages_importable():
    r = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=300,
                       env={**__import__("os").environ, "DS_ACCELERATOR": "cpu"})
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]


def test_the_training_driver_imports_neither_torch_nor_transformers():
    """The driver only reads files and talks to Ray and MLflow; torch (~2 s of CPU) and transformers (~5 s)
    in it competed with the starting workers for the same cores (issue #13)."""
    code = ("import sys; import orchestrator.training.driver, orchestrator.kinds.pretrain, orchestrator.kinds.sft; "
            "print(sorted(m for m in ('torch', 'transformers', 'deepspeed') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[]"

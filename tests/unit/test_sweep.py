"""Sweeps from the CLI: points expanded as Hydra does, every point validated before any runs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from orchestrator.config.errors import ConfigError
from orchestrator.sweep import expand, load_points
from tests.conftest import REPO, orchestrator_cmd


def test_points_are_the_cartesian_product_in_hydra_order():
    points = expand(["trainer.lr=1e-3,3e-4", "trainer.max_steps=3", "model=tiny,tiny_gpt2"])
    assert points == [["trainer.lr=0.001", "trainer.max_steps=3", "model=tiny"],
                      ["trainer.lr=0.001", "trainer.max_steps=3", "model=tiny_gpt2"],
                      ["trainer.lr=0.0003", "trainer.max_steps=3", "model=tiny"],
                      ["trainer.lr=0.0003", "trainer.max_steps=3", "model=tiny_gpt2"]]
    assert expand(["trainer.max_steps=range(1,4)"]) == [[f"trainer.max_steps={i}"] for i in (1, 2, 3)]


def test_each_point_gets_its_own_run_name_and_output_dir(tmp_path):
    points = load_points("pretrain", ["trainer.lr=1e-3,3e-4", f"workspace={tmp_path}"])
    names = [cfg.run_name for _, cfg in points]
    assert names == ["pretrain-lr_0.001", "pretrain-lr_0.0003"]
    assert len({cfg.output_dir for _, cfg in points}) == 2
    assert [cfg.trainer.lr for _, cfg in points] == [1e-3, 3e-4]


def test_a_bad_point_is_refused_naming_it(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_points("pretrain", ["trainer.lr=1e-3,-1", f"workspace={tmp_path}"])
    assert err.value.key == "trainer.lr" and "sweep point trainer.lr=-1" in err.value.problem


def test_cli_refuses_a_bad_point_before_anything_runs(tmp_path):
    code = ("import sys, runpy; sys.argv = ['orchestrator'] + sys.argv[1:]\n"
            "from orchestrator.cli import main\n"
            "try:\n    main()\nfinally:\n"
            "    print('heavy', sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'torch'}))")
    proc = subprocess.run([sys.executable, "-c", code, "run", "pretrain", "-m", "trainer.lr=1e-3,-1",
                           "trainer.max_steps=3", f"workspace={tmp_path}"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: trainer.lr: -1.0 is not positive (sweep point")
    assert "heavy []" in proc.stdout  # refused before Ray (or torch) was even imported
    assert not (tmp_path / "pretrain-lr_0.001").exists()

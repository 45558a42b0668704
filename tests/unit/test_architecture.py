"""The code's shape: layers point one way, every kind has one home, dry runs stay light."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator import kinds

REPO = Path(__file__).resolve().parents[2]


def test_layer_contract_holds():
    """import-linter's layers contract (pyproject.toml), counting imports inside functions."""
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 kept, 0 broken" in proc.stdout


def test_every_subpackage_is_in_a_layer():
    """A new subpackage must be placed in the contract, or it escapes it."""
    import tomllib

    layers = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]["layers"]
    named = {m.strip() for layer in layers for m in layer.replace(":", "|").split("|")}
    pkg = REPO / "orchestrator"
    present = {f"orchestrator.{p.name}" for p in pkg.iterdir() if (p / "__init__.py").is_file()}
    present |= {f"orchestrator.{p.stem}" for p in pkg.glob("*.py") if p.stem != "__init__"}
    assert present == named


@pytest.mark.parametrize("kind", kinds.names())
def test_each_kind_has_one_module_one_entry_point_and_one_primary_config(kind):
    spec = kinds.get(kind)
    assert spec.config.__module__ == f"orchestrator.kinds.{kind}"
    assert spec.config().kind == kind
    entry = (REPO / "jobs" / f"{kind}.py").read_text()
    assert f'config_name="{kind}"' in entry and f'hydra_main("{kind}"' in entry
    assert f"\n  - {kind}_schema\n" in (REPO / "conf" / f"{kind}.yaml").read_text()


def test_no_second_table_of_kinds():
    """The registry is the only list: no module spells out the kind names together."""
    names = [k for k in kinds.names() if k != "pipeline"]
    offenders = []
    for path in (REPO / "orchestrator").rglob("*.py"):
        text = path.read_text()
        if all(f'"{k}"' in text for k in names):
            offenders.append(str(path.relative_to(REPO)))
    assert offenders == []


def test_validation_and_dry_runs_import_neither_torch_nor_ray():
    code = ("import sys; from orchestrator import kinds; from orchestrator.entry import dry_run_text\n"
            "for k in kinds.names(): dry_run_text(kinds.load(k, ['workspace=/tmp/arch_ws']))\n"
            "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'ray', 'deepspeed', 'transformers'})\n"
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_files_stay_small():
    sizes = {str(p.relative_to(REPO)): len(p.read_text().splitlines()) for p in (REPO / "orchestrator").rglob("*.py")}
    assert max(sizes.values()) <= 800, sorted(sizes.items(), key=lambda kv: -kv[1])[:3]

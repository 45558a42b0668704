"""Cluster CLI behaviour that needs no cluster: validation first, pinned overrides, token lookup, secrets.

Fast: nothing is started (the slow end-to-end checks are in test_cluster.py).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.kinds import load
from orchestrator.runtime import jobs_api

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120, **kw)


def test_submit_validates_locally_before_contacting_the_cluster():
    # Port 9 (discard) on loopback: nothing answers there; the config error must come first.
    r = cli("submit", "pretrain", "parallel.zero_stage=7", "--address", "http://127.0.0.1:9")
    assert r.returncode == 2
    assert r.stderr.strip() == "error: parallel.zero_stage: 7 is not a ZeRO stage; fix: use 0, 1, 2 or 3"


def test_unreachable_cluster_and_missing_address_are_one_line_errors(monkeypatch):
    r = cli("list", "--address", "http://127.0.0.1:9")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "cannot reach the Ray Jobs API" in r.stderr
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    r = cli("status", "some-job", env=env)
    assert r.returncode == 2 and r.stderr.startswith("error: --address: the Ray Jobs API needs the cluster's dashboard URL")


def test_overrides_are_pinned_to_resolved_paths_and_the_job_joins_its_cluster(tmp_path):
    overrides = [f"workspace={tmp_path}", "run_name=pin", "tracking.uri=http://127.0.0.1:5000",
                 "cluster.address=http://127.0.0.1:8265", "trainer.max_steps=3", "resume=never"]
    cfg = load("pretrain", overrides)
    pinned, env = jobs_api.pinned_overrides(cfg, overrides)
    assert env == {}
    assert pinned == ["run_name=pin", "trainer.max_steps=3", f"workspace={tmp_path}",
                      "tracking.uri=http://127.0.0.1:5000", "cluster.address=auto"]
    again = load("pretrain", pinned + ["resume=auto"])  # what `resume` resubmits: same output dir, same store
    assert again.output_dir == cfg.output_dir and again.tracking.uri == cfg.tracking.uri
    assert again.cluster.address == "auto"


def test_relative_workspace_and_default_store_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load("pretrain", ["workspace=rel"])
    pinned, _ = jobs_api.pinned_overrides(cfg, ["workspace=rel"])
    assert f"workspace={tmp_path / 'rel'}" in pinned
    assert f"tracking.uri=sqlite:///{tmp_path / 'rel'}/mlflow.db" in pinned


def test_credentials_in_the_tracking_uri_travel_as_env_not_in_the_entrypoint(tmp_path):
    uri = "postgresql://mlflow:s3cr3t@db.internal:5432/mlflow"
    overrides = [f"workspace={tmp_path}", f"tracking.uri={uri}"]
    cfg = load("pretrain", overrides)
    pinned, env = jobs_api.pinned_overrides(cfg, overrides)
    assert env == {"MLFLOW_TRACKING_URI": uri}
    assert not any("s3cr3t" in o for o in pinned)
    assert "tracking.uri=${oc.env:MLFLOW_TRACKING_URI}" in pinned
    renv = jobs_api.runtime_env(env)
    assert renv["env_vars"]["MLFLOW_TRACKING_URI"] == uri and renv["working_dir"] == str(REPO)
    assert ".venv/" in renv["excludes"] and "outputs/" in renv["excludes"]
    jobs_api._check_composes("pretrain", pinned, env, load)  # the interpolation resolves inside the job


def test_token_lookup_follows_rays_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    assert jobs_api.find_token() is None
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("from-home\n")
    assert jobs_api.find_token() == "from-home"
    (tmp_path / "tok").write_text("from-path")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "tok"))
    assert jobs_api.find_token() == "from-path"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert jobs_api.find_token() == "from-env"


@pytest.mark.parametrize("text, expected", [
    ("Token authentication is enabled but Ray couldn't find an authentication token.", "no Ray auth token found"),
    ("Authentication required: Unauthorized", "no auth token was sent"),
    ("Authentication failed: Forbidden: Invalid authentication token", "rejected the auth token"),
])
def test_auth_failures_map_to_one_clear_line(text, expected):
    err = jobs_api._client_error(RuntimeError(text + "\n\nlong details"), "http://h:8265", had_token=False)
    assert expected in str(err) and "\n" not in str(err) and err.key == "RAY_AUTH_TOKEN"

"""``model.pretrained`` as an MLflow URI (runs:/ and models:/) resolves to a loadable local directory."""

from __future__ import annotations

import pytest
import torch

from orchestrator.config.model import ModelConfig
from orchestrator.models.build import build_causal_lm, resolve_pretrained

pytestmark = pytest.mark.slow  # starts an MLflow store


def test_runs_and_models_uris(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.create_experiment("t", artifact_location=(tmp_path / "art").as_uri())
    run = client.create_run(exp)
    m = ModelConfig(arch="gpt2")
    build_causal_lm(m, 5).save_pretrained(tmp_path / "hf")
    client.log_artifacts(run.info.run_id, str(tmp_path / "hf"), "model")
    client.create_registered_model("tiny")
    client.create_model_version("tiny", f"runs:/{run.info.run_id}/model", run.info.run_id)
    expected = build_causal_lm(m, 5)
    for i, u in enumerate((f"runs:/{run.info.run_id}/model", "models:/tiny/1")):
        local = resolve_pretrained(u, dst_dir=str(tmp_path / f"dl{i}"), tracking_uri=uri)
        got = build_causal_lm(ModelConfig(arch="gpt2", pretrained=u), 0, local_pretrained_dir=local)
        assert all(torch.equal(a, b) for a, b in zip(got.parameters(), expected.parameters()))

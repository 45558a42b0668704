"""Dataset inputs and Model Registry versions: what lets a model be traced back to its data."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Mapping, Optional

from orchestrator.core.dataset import load_manifest


def log_dataset_input(client, run_id: str, dataset_dir: str | Path, context: str, name: Optional[str] = None) -> str:
    """Log a dataset directory as an MLflow input with its manifest digest (``mlflow.log_input``)."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag

    manifest = load_manifest(dataset_dir)
    digest = manifest["digest"]
    with warnings.catch_warnings():  # "can be interpreted in multiple ways": both are the local source
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(Path(dataset_dir).resolve().as_uri())
    ds = MetaDataset(source=source,
                     name=name or f"{manifest['format']}-{digest[:8]}", digest=digest[:36])
    client.log_inputs(run_id, datasets=[DatasetInput(ds._to_mlflow_entity(),
                                                     tags=[InputTag("mlflow.data.context", context)])])
    client.set_tag(run_id, f"dataset.{context}.digest", digest)
    return digest


def register_model_dir(client, run_id: str, model_dir: str | Path, name: str, tags: Mapping[str, str]) -> str:
    """Upload ``model_dir`` to the run's ``model`` artifact path and create a registry version."""
    client.log_artifacts(run_id, str(model_dir), "model")
    source = f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/model"
    try:
        client.create_registered_model(name)
    except Exception:
        pass  # exists already
    version = client.create_model_version(name, source=source, run_id=run_id, tags=dict(tags))
    return str(version.version)

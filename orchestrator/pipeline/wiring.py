"""How one stage's outputs become the next stage's inputs (no hand-copied paths).

Each job kind returns a result dict; :func:`stage_outputs` normalises it into named outputs
(``dataset`` for data_prep, ``model`` for training jobs) and :func:`wiring_overrides` turns the
outputs of a stage's ``after`` stages into Hydra overrides of that stage's config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from orchestrator.data.shards import MANIFEST, load_manifest

# dataset format each training kind reads from ``data.path``
DATA_FORMAT_OF = {"pretrain": "pretrain", "sft": "sft", "reward_model": "preference", "dpo": "preference",
                  "ppo": "prompts"}
MODEL_PRODUCERS = ("pretrain", "sft", "reward_model", "dpo", "ppo")
# keys the pipeline fills from upstream outputs (missing until the upstream stage has run)
WIRED_KEYS = ("data.path", "model.pretrained", "ppo.reward_model")


def stage_outputs(kind: str, result: Mapping[str, Any], output_dir: str) -> dict[str, str]:
    """Named output paths of a finished stage."""
    if kind == "data_prep":
        path = result.get("dataset_dir") or result.get("output_dir") or str(Path(output_dir) / "dataset")
        if not (Path(path) / MANIFEST).exists() and (Path(path) / "dataset" / MANIFEST).exists():
            path = str(Path(path) / "dataset")
        return {"dataset": str(path)}
    export = result.get("export_dir")
    return {"model": str(export)} if export else {}


def wiring_overrides(kind: str, upstream: list[tuple[str, Mapping[str, Any]]]) -> list[str]:
    """Overrides for a ``kind`` stage given ``(upstream_kind, upstream_record)`` pairs in ``after``
    order, where a record holds ``outputs`` and ``result``."""
    overrides: list[str] = []
    for up_kind, record in upstream:
        outputs = record["outputs"]
        if up_kind == "data_prep" and kind in DATA_FORMAT_OF:
            fmt = load_manifest(outputs["dataset"]).get("format")
            if fmt == DATA_FORMAT_OF[kind]:
                overrides.append(f"data.path={outputs['dataset']}")
        elif up_kind == "reward_model" and kind == "ppo" and "model" in outputs:
            overrides.append(f"ppo.reward_model={outputs['model']}")
        elif up_kind in MODEL_PRODUCERS and kind in MODEL_PRODUCERS and "model" in outputs:
            overrides.append(f"model.pretrained={outputs['model']}")
    return overrides


def upstream_model_tag(upstream: list[tuple[str, Mapping[str, Any]]]) -> dict[str, str]:
    """MLflow tags naming the upstream model versions and dataset digests a stage derives from."""
    tags: dict[str, str] = {}
    for up_kind, record in upstream:
        res = record.get("result", {})
        if res.get("model_name") and res.get("model_version"):
            key = "upstream_reward_model" if up_kind == "reward_model" else "upstream_model"
            tags.setdefault(key, f"{res['model_name']}/{res['model_version']}")
        if up_kind == "data_prep" and "dataset" in record["outputs"]:
            tags["upstream_dataset_digest"] = load_manifest(record["outputs"]["dataset"])["digest"]
    return tags

"""How one stage's outputs become the next stage's inputs (no hand-copied paths).

Each kind's spec (``orchestrator.kinds``) declares its named ``outputs`` (``dataset``, ``model``), the
dataset format it reads (``data_format``) and which config key takes an upstream ``model``
(``model_inputs``); :func:`wiring_overrides` turns the outputs of a stage's ``after`` stages into Hydra
overrides of that stage's config.
"""

from __future__ import annotations

from typing import Any, Mapping

from orchestrator.data.shards import load_manifest

Upstream = list[tuple[Any, Mapping[str, Any]]]
"""``(upstream kind spec, record)`` pairs in ``after`` order; a record holds ``outputs`` and ``result``."""


def wired_keys(spec: Any) -> set[str]:
    """Keys the pipeline may fill for a ``spec`` stage (missing until the upstream stage has run)."""
    return ({"data.path"} if spec.data_format else set()) | set(spec.model_inputs.values())


def wiring_overrides(spec: Any, upstream: Upstream) -> list[str]:
    """Overrides for a stage of kind ``spec`` given its upstream stages."""
    overrides: list[str] = []
    for up, record in upstream:
        outputs = record["outputs"]
        if "dataset" in outputs and spec.data_format:
            if load_manifest(outputs["dataset"]).get("format") == spec.data_format:
                overrides.append(f"data.path={outputs['dataset']}")
        if "model" in outputs:
            key = spec.model_input_key(up.name)
            if key is not None:
                overrides.append(f"{key}={outputs['model']}")
    return overrides


def upstream_model_tag(upstream: Upstream) -> dict[str, str]:
    """MLflow tags naming the upstream model versions and dataset digests a stage derives from."""
    tags: dict[str, str] = {}
    for up, record in upstream:
        res = record.get("result", {})
        if res.get("model_name") and res.get("model_version"):
            key = "upstream_reward_model" if up.name == "reward_model" else "upstream_model"
            tags.setdefault(key, f"{res['model_name']}/{res['model_version']}")
        if "dataset" in record["outputs"]:
            tags["upstream_dataset_digest"] = load_manifest(record["outputs"]["dataset"])["digest"]
    return tags

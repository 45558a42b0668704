"""Hydra ConfigStore registration: the dataclasses are the schema, YAML only selects values."""

from __future__ import annotations

from hydra.core.config_store import ConfigStore


def register_schema(name: str, node: type) -> None:
    """Register a primary config dataclass as ``name`` (``<kind>_schema``; idempotent).

    ``conf/<kind>.yaml`` lists ``<kind>_schema`` first in its defaults, so every group preset and
    command-line override is merged onto the typed dataclass: unknown keys and wrong types fail at
    compose time. The kind registry (:mod:`orchestrator.kinds.registry`) registers every kind's schema.
    """
    ConfigStore.instance().store(name=name, node=node)

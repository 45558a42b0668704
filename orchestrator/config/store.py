"""All Hydra ConfigStore registrations: the dataclasses are the schema, YAML only selects values."""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from orchestrator.config.jobs import PRIMARY_SCHEMAS

_registered = False


def register_configs() -> None:
    """Register ``<kind>_schema`` for each primary config (idempotent).

    ``conf/<kind>.yaml`` lists ``<kind>_schema`` first in its defaults, so every group preset and
    command-line override is merged onto the typed dataclass: unknown keys and wrong types fail at
    compose time.
    """
    global _registered
    if _registered:
        return
    cs = ConfigStore.instance()
    for kind, schema in PRIMARY_SCHEMAS.items():
        cs.store(name=f"{kind}_schema", node=schema)
    _registered = True

"""Shared base for config dataclasses: read-only once built, validated in ``__post_init__``."""

from __future__ import annotations

import dataclasses
from typing import Any


class Frozen:
    """Mixin making a dataclass read-only after ``freeze()``.

    Hydra needs mutable dataclasses while composing (overrides are applied to them), so the schema
    classes are ordinary dataclasses; :func:`orchestrator.config.load.to_typed` freezes the resolved
    tree. Derive a changed copy with :func:`dataclasses.replace`.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if self.__dict__.get("_frozen", False):
            raise dataclasses.FrozenInstanceError(
                f"{type(self).__name__}.{name} is read-only in a resolved config; "
                "use dataclasses.replace() to derive a changed copy"
            )
        object.__setattr__(self, name, value)

    def freeze(self) -> None:
        """Make this config and every nested config read-only."""
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            _freeze_value(getattr(self, f.name))
        object.__setattr__(self, "_frozen", True)


def _freeze_value(value: Any) -> None:
    if isinstance(value, Frozen):
        value.freeze()
    elif isinstance(value, (list, tuple)):
        for v in value:
            _freeze_value(v)
    elif isinstance(value, dict):
        for v in value.values():
            _freeze_value(v)


def as_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a config dataclass (for YAML dumps, MLflow params, hashing)."""
    return dataclasses.asdict(cfg)

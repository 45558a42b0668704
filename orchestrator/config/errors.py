"""The project's user-facing error type for bad configuration."""

from __future__ import annotations


class ConfigError(ValueError):
    """A user mistake in the configuration, reported as one line naming the key and the fix.

    Args:
        key: dotted config key at fault, e.g. ``parallel.zero_stage``.
        problem: what is wrong with the value.
        fix: what the user should do instead.
    """

    def __init__(self, key: str, problem: str, fix: str) -> None:
        self.key = key
        self.problem = problem
        self.fix = fix
        super().__init__(f"{key}: {problem}; fix: {fix}")


def require(cond: bool, key: str, problem: str, fix: str) -> None:
    """Raise :class:`ConfigError` unless ``cond`` holds."""
    if not cond:
        raise ConfigError(key, problem, fix)

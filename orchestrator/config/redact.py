"""Keep secrets (tokens, passwords, keys) out of printed configs and MLflow params."""

from __future__ import annotations

import re
from typing import Any

SECRET_KEY = re.compile(r"(token|password|passwd|secret|api[_-]?key|access[_-]?key|credential)", re.I)
_URI_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][\w+.-]*://)(?P<user>[^:/@\s]+):(?P<pw>[^@/\s]+)@")
REDACTED = "***"


def redact_value(value: str) -> str:
    """Hide the password of ``scheme://user:password@host`` URIs."""
    return _URI_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@", value)


def redact(obj: Any, key: str = "") -> Any:
    """Copy of a nested dict/list with secret-named keys and URI passwords masked."""
    if isinstance(obj, dict):
        return {k: redact(v, str(k)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact(v, key) for v in obj]
    if key and SECRET_KEY.search(key) and obj not in (None, ""):
        return REDACTED
    if isinstance(obj, str):
        return redact_value(obj)
    return obj

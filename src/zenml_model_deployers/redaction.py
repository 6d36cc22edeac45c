"""Redaction: every secret value resolved in this process is scrubbed from any text.

The registry of known values lives here, apart from :mod:`zenml_model_deployers.secrets`
(which resolves references through ZenML), so that :mod:`zenml_model_deployers.errors`
can redact every message it builds while importing nothing else of the package.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

_REDACTED = "***"
_known_values: set[str] = set()
_lock = threading.Lock()


def remember_secret_value(value: str) -> None:
    """Registers a value that must never be shown (it is scrubbed by :func:`redact`).

    Args:
        value: the secret value.
    """
    if value and len(value) >= 4:
        with _lock:
            _known_values.add(value)


def redact(text: str) -> str:
    """Scrubs every secret value resolved in this process from a text.

    Args:
        text: any text (log tail, error body, message).

    Returns:
        The text with secret values replaced by ``***``.
    """
    if not text:
        return text
    with _lock:
        values = sorted(_known_values, key=len, reverse=True)
    for v in values:
        text = text.replace(v, _REDACTED)
    return text


def redact_obj(obj: Any) -> Any:
    """Applies :func:`redact` to every string inside a JSON-like structure.

    Args:
        obj: dicts, lists and scalars.

    Returns:
        A redacted copy.
    """
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, Mapping):
        return {k: redact_obj(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [redact_obj(v) for v in obj]
    return obj

"""Secret references (ZenML secrets) resolved only at call time.

A secret reference is ZenML's own syntax, ``{{secret_name.key}}``. Configs store the
reference, never the value. Every resolved value is remembered (in this process only)
so that :func:`~zenml_model_deployers.redaction.redact` can scrub it from any text
before it reaches a log line, an error message, metadata or the service store.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from zenml_model_deployers.errors import SecretResolutionError
from zenml_model_deployers.redaction import redact, redact_obj, remember_secret_value

__all__ = [
    "is_secret_reference",
    "redact",
    "redact_obj",
    "reject_plain_secrets",
    "remember_secret_value",
    "resolve",
    "resolve_mapping",
]

_REF = re.compile(r"^\{\{\s*([^.\s{}]+)\.([^\s{}]+)\s*\}\}$")


def is_secret_reference(value: str) -> bool:
    """Tells whether a string is a ZenML secret reference ``{{name.key}}``.

    Args:
        value: the string.

    Returns:
        True if it is a reference.
    """
    return bool(_REF.match(value.strip()))


def resolve(value: str) -> str:
    """Resolves a secret reference through ZenML's secret store; plain strings pass through.

    Args:
        value: a secret reference or a plain value.

    Returns:
        The resolved value.

    Raises:
        SecretResolutionError: if the secret or key does not exist.
    """
    match = _REF.match(value.strip())
    if not match:
        return value
    name, key = match.group(1), match.group(2)
    from zenml.client import Client

    try:
        secret = Client().get_secret(name)
    except (KeyError, ValueError) as e:
        raise SecretResolutionError(
            f"Secret '{name}' referenced as {value.strip()} does not exist.",
            hint=f"create it with `zenml secret create {name} -i` (key `{key}`, its value at a prompt that does not echo).",
        ) from e
    if key not in secret.secret_values:
        raise SecretResolutionError(
            f"Secret '{name}' has no key '{key}'.",
            hint=f"add it with `zenml secret update {name} -i` (key `{key}`, its value at a prompt that does not echo).",
        )
    resolved = str(secret.secret_values[key])
    remember_secret_value(resolved)
    return resolved


def resolve_mapping(values: Mapping[str, str]) -> dict[str, str]:
    """Resolves every secret reference among a mapping's values.

    Args:
        values: e.g. environment variables, some of them secret references.

    Returns:
        A new dict with the references replaced by their values.
    """
    return {k: resolve(v) for k, v in values.items()}


def reject_plain_secrets(data: Any, where: str, fields: Mapping[str, str], hint: str) -> Any:
    """Refuses plain values where only secret references may go (a model validator's body,
    ``mode="before"``): the one check every flavor's credential fields share.

    Args:
        data: the raw input of a model validator.
        where: what is being configured, for the message (e.g. "zmd-databricks deployment").
        fields: each credential field and an example reference for it (``{{secret.key}}``).
        hint: how to create the secret, appended to the message.

    Returns:
        The data, unchanged.

    Raises:
        ValueError: a plain value was given (the message never contains it).
    """
    if isinstance(data, dict):
        for key, example in fields.items():
            value = data.get(key)
            if value is not None and not (isinstance(value, str) and is_secret_reference(value)):
                raise ValueError(
                    f"{where}: `{key}` must be a ZenML secret reference such as "
                    f"'{example}', never the value itself: {hint}"
                )
    return data


def references_only(where: str, fields: Mapping[str, str], hint: str) -> Any:
    """A pydantic model validator that refuses plain values in credential fields (see
    :func:`reject_plain_secrets`): assign it in the model's body, e.g.
    ``_token_is_a_reference = references_only("zmd-x deployment", {"token": ...}, HINT)``.

    Set ``hide_input_in_errors=True`` on the model too: pydantic would echo the input.

    Args:
        where: what is being configured, for the message.
        fields: each credential field and an example reference for it.
        hint: how to create the secret.

    Returns:
        The validator (``mode="before"``).
    """
    from pydantic import model_validator

    def check(cls: type, data: Any) -> Any:
        return reject_plain_secrets(data, where, fields, hint)

    # Pydantic makes a validator whose first parameter is `cls` a classmethod.
    return model_validator(mode="before")(check)

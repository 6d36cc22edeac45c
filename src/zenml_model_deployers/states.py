"""The one vocabulary for a deployment's state, and its mapping from ZenML's ServiceState.

Every place a user reads a state (the `zmd models list` table and its JSON, `describe`, the
`deployment` run metadata, the artifact's metadata and card) shows these words. ZenML's own
enum values (``active``, ``inactive``...) stay inside the service store, where ZenML reads
them; they are mapped here, once. Importing this module imports nothing heavy.
"""

from __future__ import annotations

# ZenML ServiceState value -> the word users see.
STATE_WORDS: dict[str, str] = {
    "active": "running",
    "inactive": "stopped",
    "error": "error",
    "pending_startup": "starting",
    "pending_shutdown": "stopping",
    "scaled_to_zero": "scaled-to-zero",
}


def state_word(state: object) -> str:
    """The user's word for a ZenML service state (an enum member or its value).

    Args:
        state: a ``ServiceState`` or its string value.

    Returns:
        One of ``running``, ``stopped``, ``error``, ``starting``, ``stopping``,
        ``scaled-to-zero`` (an unknown value is returned as it is).
    """
    value = str(getattr(state, "value", state))
    return STATE_WORDS.get(value, value)

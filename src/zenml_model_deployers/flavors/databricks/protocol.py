"""The request format of Databricks Model Serving: MLflow's input forms of an invocation body.

Pure functions (no databricks-sdk): ``predict``, the raw request of ``format_request`` and the
batch steps build the same body.
"""

from __future__ import annotations

import json
from typing import Any

# The keys that say which input form a body already is (sent as they are).
BODY_FORMS = frozenset(
    {"dataframe_split", "dataframe_records", "instances", "inputs", "messages", "input", "prompt"}
)


def request_body(data: Any, query_format: str = "auto") -> dict[str, Any]:
    """The invocation body for ``data`` in the configured (or inferred) input form.

    ``auto``: a DataFrame is sent as ``dataframe_split``; a list of dicts as
    ``dataframe_records``; a dict that already names a form (``dataframe_split``,
    ``instances``, ``inputs``, ``messages``, ...) as it is; a dict of columns as ``inputs``; an
    array or other list as ``instances``.

    Args:
        data: the input.
        query_format: ``auto`` or one of the forms (the config's ``query_format``).

    Returns:
        The JSON body.
    """
    fmt = query_format
    if hasattr(data, "to_dict") and hasattr(data, "columns"):
        split = json.loads(data.to_json(orient="split", index=False))
        if fmt in ("auto", "dataframe_split"):
            return {"dataframe_split": split}
        if fmt == "dataframe_records":
            return {"dataframe_records": json.loads(data.to_json(orient="records"))}
        data = split["data"]
    if hasattr(data, "tolist"):
        data = data.tolist()
    if fmt == "messages":
        if isinstance(data, dict) and "messages" in data:
            return dict(data)
        return {
            "messages": data if isinstance(data, list) else [{"role": "user", "content": str(data)}]
        }
    if fmt != "auto":
        return {fmt: data}
    if isinstance(data, dict) and BODY_FORMS & set(data):
        return dict(data)
    if isinstance(data, dict):
        return {"inputs": data}
    if isinstance(data, list) and data and all(isinstance(r, dict) for r in data):
        return {"dataframe_records": data}
    return {"instances": data}


def predictions_of(body: bytes) -> Any:
    """The ``predictions`` of a raw invocation response.

    Args:
        body: the response body.

    Returns:
        Predictions (or the whole JSON for other endpoint kinds).
    """
    out = json.loads(body)
    return out.get("predictions", out) if isinstance(out, dict) else out

"""Request and response bodies of the protocols Seldon serves: the Seldon protocol (Core 1),
and the Open Inference Protocol V2 (Core 2, and Core 1 with ``protocol: v2``), which is
shared with KServe in :mod:`zenml_model_deployers.kube.v2protocol`.

numpy is imported inside the functions (it comes with scikit-learn, the flavor's extra).
"""

from __future__ import annotations

from typing import Any

from zenml_model_deployers.kube.v2protocol import decode_v2, encode_v2

__all__ = ["decode_seldon", "decode_v2", "encode_seldon", "encode_v2"]


def encode_seldon(data: Any) -> dict[str, Any]:
    """A Seldon protocol request: ``{"data": {"ndarray": rows}}`` (Seldon Core 1).

    Args:
        data: a DataFrame (its column names are sent too), ndarray or list of rows.

    Returns:
        The request.
    """
    import numpy as np

    if isinstance(data, dict) and ("data" in data or "jsonData" in data):
        return data
    body: dict[str, Any] = {}
    if hasattr(data, "columns"):
        body["names"] = [str(c) for c in data.columns]
    values = data.to_numpy() if hasattr(data, "to_numpy") else np.asarray(data)
    if values.ndim == 1:
        values = values.reshape(1, -1)
    body["ndarray"] = values.tolist()
    return {"data": body}


def decode_seldon(body: dict[str, Any]) -> Any:
    """The predictions of a Seldon protocol response (``data.ndarray`` or ``data.tensor``).

    Args:
        body: the response.

    Returns:
        A list (one entry per row for a single-column output).
    """
    data = body.get("data") or {}
    if "ndarray" in data:
        values = data["ndarray"]
    elif "tensor" in data:
        import numpy as np

        t = data["tensor"]
        values = np.asarray(t.get("values") or []).reshape(t.get("shape") or [-1]).tolist()
    else:
        return body
    if values and all(isinstance(v, list) and len(v) == 1 for v in values):
        return [v[0] for v in values]
    return values

"""Request and response bodies of the protocols Seldon serves: the Open Inference Protocol V2
(Core 2, and Core 1 with ``protocol: v2``) and the Seldon protocol (Core 1).

numpy is imported inside the functions (it comes with scikit-learn, the flavor's extra).
"""

from __future__ import annotations

from typing import Any

from zenml_model_deployers.errors import ConfigurationError


def encode_v2(data: Any) -> dict[str, Any]:
    """Turns a DataFrame, ndarray or list into an Open Inference Protocol V2 request.

    Args:
        data: rows of numbers (a 1-D input is one row).

    Returns:
        ``{"inputs": [{"name", "shape", "datatype", "data"}]}``.

    Raises:
        ConfigurationError: data that is not a rectangular numeric or string tensor.
    """
    import numpy as np

    if isinstance(data, dict) and "inputs" in data:
        return data  # already a V2 request
    values = data.to_numpy() if hasattr(data, "to_numpy") else np.asarray(data)
    if values.ndim == 1:
        values = values.reshape(1, -1)
    kind = values.dtype.kind
    if kind == "b":
        datatype = "BOOL"
    elif kind in "iu":
        datatype = "INT64"
        values = values.astype(np.int64)
    elif kind == "f":
        datatype = "FP64"
        values = values.astype(np.float64)
    elif kind in "OUS":
        datatype = "BYTES"
        values = values.astype(str)
    else:
        raise ConfigurationError(f"Cannot send a {values.dtype} tensor in the V2 protocol.")
    return {
        "inputs": [
            {
                "name": "predict",
                "shape": list(values.shape),
                "datatype": datatype,
                "data": values.reshape(-1).tolist(),
            }
        ]
    }


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


def decode_v2(body: dict[str, Any]) -> Any:
    """The predictions of a V2 response: the first output, reshaped to its shape.

    Args:
        body: the response.

    Returns:
        A list (one entry per row for a ``[n, 1]`` output).
    """
    import numpy as np

    outputs = body.get("outputs") or []
    if not outputs:
        return body
    first = outputs[0]
    values = np.asarray(first.get("data") or [])
    shape = first.get("shape") or [values.size]
    if len(shape) == 2 and shape[1] == 1:
        shape = [shape[0]]
    return values.reshape(shape).tolist()

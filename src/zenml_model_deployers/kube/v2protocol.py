"""The Open Inference Protocol (KServe's V2, also Seldon Core 2's and MLServer's) request and
response bodies, shared by the cluster flavors that speak it (`zmd-seldon`, `zmd-kserve`).

numpy is imported inside the functions (it comes with scikit-learn, the flavors' extras).
"""

from __future__ import annotations

from typing import Any

from zenml_model_deployers.errors import ConfigurationError

# What a `curl` example sends: one row of four numbers.
EXAMPLE_V2_BODY = (
    '{"inputs": [{"name": "predict", "shape": [1, 4], "datatype": "FP64", '
    '"data": [0.1, 0.2, 0.3, 0.4]}]}'
)


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

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

    A DataFrame is sent the way MLServer and KServe read one back as a DataFrame: one input
    per column, named as the column, with its own datatype, and the request parameter
    ``content_type: pd`` (so a model trained on named, mixed-type columns gets them). Anything
    else is one tensor named ``predict``. A missing value (NaN, None) is JSON's ``null``.

    Args:
        data: a DataFrame, or rows of numbers or strings (a 1-D input is one row).

    Returns:
        ``{"inputs": [{"name", "shape", "datatype", "data"}, ...]}`` (and ``parameters``).

    Raises:
        ConfigurationError: data that is not a rectangular numeric or string tensor.
    """
    import numpy as np

    if isinstance(data, dict) and "inputs" in data:
        return data  # already a V2 request
    if hasattr(data, "columns") and hasattr(data, "to_numpy"):
        inputs = [_tensor(str(name), data[name].to_numpy().reshape(-1, 1)) for name in data.columns]
        return {"parameters": {"content_type": "pd"}, "inputs": inputs}
    values = np.asarray(data)
    if values.ndim == 1:
        values = values.reshape(1, -1)
    return {"inputs": [_tensor("predict", values)]}


def _tensor(name: str, values: Any) -> dict[str, Any]:
    """One V2 input tensor: datatype from the array's kind, missing values as null."""
    import numpy as np

    kind = values.dtype.kind
    missing: Any = None
    if kind == "b":
        datatype = "BOOL"
    elif kind in "iu":
        datatype = "INT64"
        values = values.astype(np.int64)
    elif kind == "f":
        # float32 stays FP32: a model whose signature says float32 (PyTorch) refuses FP64.
        datatype = "FP32" if values.dtype == np.float32 else "FP64"
        missing = np.isnan(values)
        values = values.astype(np.float32 if datatype == "FP32" else np.float64)
    elif kind in "OUS":
        datatype = "BYTES"
        import pandas as pd

        missing = pd.isna(values)
        values = values.astype(str)
    else:
        raise ConfigurationError(f"Cannot send a {values.dtype} tensor in the V2 protocol.")
    flat = values.reshape(-1).tolist()
    if missing is not None and missing.any():
        flat = [None if m else v for v, m in zip(flat, missing.reshape(-1).tolist(), strict=True)]
    return {"name": name, "shape": list(values.shape), "datatype": datatype, "data": flat}


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

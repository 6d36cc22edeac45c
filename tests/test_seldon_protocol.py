"""The request and response bodies zmd-seldon's predict() sends and reads (no server)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from zenml_model_deployers.errors import ConfigurationError
from zenml_model_deployers.flavors.seldon.protocol import (
    decode_seldon,
    decode_v2,
    encode_seldon,
    encode_v2,
)


def test_v2_inputs_are_typed_tensors() -> None:
    """Rows become one tensor with its shape and datatype; a 1-D input is one row; a missing
    number is null."""
    assert encode_v2([[1.5, np.nan], [2.0, 1.0]])["inputs"] == [
        {"name": "predict", "shape": [2, 2], "datatype": "FP64", "data": [1.5, None, 2.0, 1.0]}
    ]
    assert encode_v2([1, 2, 3])["inputs"][0]["shape"] == [1, 3]
    assert encode_v2(np.array([[1, 2]]))["inputs"][0]["datatype"] == "INT64"
    assert encode_v2([["x", "y"]])["inputs"][0]["datatype"] == "BYTES"
    assert encode_v2([[True, False]])["inputs"][0]["datatype"] == "BOOL"
    ready = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]}
    assert encode_v2(ready) is ready
    with pytest.raises(ConfigurationError, match="complex128"):
        encode_v2(np.array([[1j]]))


def test_v2_a_dataframe_is_one_input_per_column() -> None:
    """A DataFrame goes as MLServer's and KServe's pandas encoding: one input per column with
    its own datatype, ``content_type: pd``; a category is its values, a missing value null."""
    frame = pd.DataFrame(
        {"age": [44.0, np.nan], "city": ["paris", None], "n": [1, 2], "ok": [True, False]}
    )
    frame["plan"] = pd.Categorical(["pro", "free"])
    assert encode_v2(frame) == {
        "parameters": {"content_type": "pd"},
        "inputs": [
            {"name": "age", "shape": [2, 1], "datatype": "FP64", "data": [44.0, None]},
            {"name": "city", "shape": [2, 1], "datatype": "BYTES", "data": ["paris", None]},
            {"name": "n", "shape": [2, 1], "datatype": "INT64", "data": [1, 2]},
            {"name": "ok", "shape": [2, 1], "datatype": "BOOL", "data": [True, False]},
            {"name": "plan", "shape": [2, 1], "datatype": "BYTES", "data": ["pro", "free"]},
        ],
    }


def test_v2_outputs_are_decoded_per_row() -> None:
    """A [n, 1] output is one value per row; other shapes keep theirs."""
    out = {
        "outputs": [{"name": "predict", "shape": [3, 1], "datatype": "INT64", "data": [0, 1, 1]}]
    }
    assert decode_v2(out) == [0, 1, 1]
    probs = {"outputs": [{"shape": [2, 2], "data": [0.1, 0.9, 0.8, 0.2]}]}
    assert decode_v2(probs) == [[0.1, 0.9], [0.8, 0.2]]


def test_seldon_protocol_round_trip() -> None:
    """Core 1's Seldon protocol: ndarray rows (with a DataFrame's column names) and back."""
    frame = pd.DataFrame({"a": [1.0], "b": [2.0]})
    assert encode_seldon(frame) == {"data": {"names": ["a", "b"], "ndarray": [[1.0, 2.0]]}}
    assert encode_seldon([1.0, 2.0]) == {"data": {"ndarray": [[1.0, 2.0]]}}
    assert decode_seldon({"data": {"names": ["t:0"], "ndarray": [[1], [0]]}}) == [1, 0]
    tensor = {"data": {"tensor": {"shape": [2, 2], "values": [1, 2, 3, 4]}}}
    assert decode_seldon(tensor) == [[1, 2], [3, 4]]

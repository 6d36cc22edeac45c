"""A stable digest of a fitted model: the same fitted state gives the same digest in any process.

The digest names a packaged model's directory, and so its model URI and the deployment's config
hash: an unchanged model re-run through a pipeline gives the same revision, and nothing restarts.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

from zenml_model_deployers.packaging.libraries import ModelLibrary

# MLmodel fields that change on every save of the same model.
_VOLATILE = ("utc_time_created", "model_uuid", "run_id", "model_id", "artifact_path")


def model_digest(model: Any, library: ModelLibrary, input_example: Any = None) -> str | None:
    """A 16-hex-digit digest of the model's fitted state, its input example and its class.

    Guarantees: equal for the same fitted model (and example) in any process and with any
    ``PYTHONHASHSEED``, whether the model was just fitted, deep-copied (as ZenML copies a
    pipeline's inputs) or loaded back from an artifact; different when a fitted parameter, the
    example, the model's class or the MLflow version differ. For scikit-learn, XGBoost, LightGBM and pyfunc models it is a pickle of the model
    written by value (:func:`value_pickle`). PyTorch's pickles are not reproducible (each embeds a random
    serialization id), so a module's digest covers its ``state_dict`` tensors, its structure
    (``repr``) and its class's source instead; a transformers pipeline's adds its task, its
    model's config and its tokenizer's definition.

    Args:
        model: the fitted model.
        library: what :func:`~zenml_model_deployers.packaging.libraries.detect_library` said.
        input_example: the example stored with the model, if any.

    Returns:
        The digest, or None when the model cannot be digested in memory (it cannot be pickled):
        then digest the saved directory with :func:`directory_digest`.
    """
    import mlflow

    h: hashlib._Hash
    try:
        if library is ModelLibrary.PYTORCH:
            h = _torch_state_hash(model)
        elif library is ModelLibrary.TRANSFORMERS:
            h = _pipeline_hash(model)
        else:
            h = hashlib.sha256(value_pickle(model))
        h.update(value_pickle(input_example))
    except Exception:
        return None
    h.update(
        f"{type(model).__module__}.{type(model).__qualname__}|mlflow={mlflow.__version__}".encode()
    )
    return h.hexdigest()[:16]


def value_pickle(obj: Any) -> bytes:
    """A pickle of ``obj`` that depends on its values, not on which of its parts are one object
    nor on the bytes no value is in.

    A plain pickle writes a part it has seen before (the same object) as a back-reference: a
    freshly fitted scikit-learn model shares interned strings ("drop") and numpy dtypes that the
    same model loaded back from an artifact does not, so their plain pickles differ. Here nothing
    is memoized (the Python pickler's ``fast`` mode), so equal values give equal bytes. A
    structure that refers to itself cannot be written so: it gets the plain pickle. Padded
    structured arrays are written with zeroed padding, pandas frames by their columns' values
    and LightGBM boosters as their model string (:func:`value_pickle_bytes`).
    """
    try:
        return value_pickle_bytes(obj, fast=True)
    except RecursionError:
        return value_pickle_bytes(obj, fast=False)


def value_pickle_bytes(obj: Any, fast: bool) -> bytes:
    """A pickle (protocol 4) in which what a copy or a load changes, but not the values, is
    written as a copy would have it: pandas frames and extension arrays by value
    (:func:`_pandas_reduce`), LightGBM boosters as their model string (:func:`_lightgbm_reduce`),
    and every padded numpy structured array with its padding zeroed. A fitted decision tree
    keeps its nodes in such an array (57 bytes of fields in a 64-byte item): its padding is
    whatever the allocator left there, so the same tree fitted twice, or in another process,
    pickles to different bytes. What loads back has the same dtypes and values.

    Args:
        obj: what to pickle.
        fast: no memo (equal values give equal bytes; a self-referential structure raises
            RecursionError).

    Returns:
        The pickle.
    """
    buf = io.BytesIO()
    pickler = _ZeroPaddingPickler(buf, protocol=4)  # the C pickler cannot switch its memo off
    pickler.fast = fast
    pickler.dump(obj)
    return buf.getvalue()


def value_copy(obj: Any) -> Any:
    """``obj`` written as :func:`value_pickle_bytes` writes it (memo on) and loaded back: a copy
    whose strings, dtypes and tree padding are as any other copy of the same values would have
    them (``model.joblib`` dumps it). The C pickler: its bytes are never digested.

    Args:
        obj: what to copy.

    Returns:
        The copy.
    """
    buf = io.BytesIO()
    _ZeroPaddingCPickler(buf, protocol=4).dump(obj)
    return pickle.loads(buf.getvalue())


# What most of a model's pickle is made of, and nothing here writes otherwise.
_PLAIN = frozenset({int, float, str, bytes, bool, type(None), tuple, list, dict})


def _value_reduce(obj: Any) -> Any:
    """The pickler's ``reducer_override``: what :func:`value_pickle_bytes` writes differently
    from a plain pickle, else ``NotImplemented``."""
    import sys

    if type(obj) in _PLAIN:  # called for every object: most are these
        return NotImplemented
    # Only a library already imported can have made obj: nothing is imported here.
    pd = sys.modules.get("pandas")
    if pd is not None and (canonical := _pandas_reduce(pd, obj)) is not None:
        return canonical
    lgb = sys.modules.get("lightgbm")
    if lgb is not None and type(obj) is lgb.Booster:
        return _lightgbm_reduce(lgb, obj)
    np = sys.modules.get("numpy")
    if np is None or type(obj) is not np.ndarray or obj.dtype.names is None:
        return NotImplemented
    fields = obj.dtype.fields
    if sum(fields[n][0].itemsize for n in obj.dtype.names) == obj.dtype.itemsize:
        return NotImplemented
    zeroed = np.zeros(obj.shape, dtype=obj.dtype)
    for name in obj.dtype.names:
        zeroed[name] = obj[name]
    return zeroed.__reduce_ex__(4)


class _ZeroPaddingPickler(pickle._Pickler):
    """The Python pickler (its memo can be switched off: ``fast``)."""

    def reducer_override(self, obj: Any) -> Any:
        return _value_reduce(obj)


class _ZeroPaddingCPickler(pickle.Pickler):
    """The C pickler, memo always on: 4-5x the Python one's speed on a large forest."""

    def reducer_override(self, obj: Any) -> Any:
        return _value_reduce(obj)


def _lightgbm_reduce(lgb: Any, booster: Any) -> Any:
    """A LightGBM booster as its model string: what ``copy.deepcopy`` keeps of it, and all that
    its predictions depend on, besides the best iteration (at most 0: all iterations). A fitted
    booster also keeps its training parameters and evaluation buffers, which a copy (ZenML
    deep-copies a step's input) rebuilds from the model string differently."""
    if booster._handle is None:  # not fitted, or closed: nothing but its parameters
        return NotImplemented
    state = {"best_iteration": max(booster.best_iteration, 0)}
    return lgb.Booster, (None, None, None, booster.model_to_string(num_iteration=-1)), state


def _pandas_reduce(pd: Any, obj: Any) -> Any:
    """A pandas frame or extension array written by value, or None for anything else.

    A frame's block layout and its arrays' read-only flags depend on how it was made, not on
    its values: a slice of a frame (an input example, ``df[:10]``) marks its arrays read-only,
    a copy does not, and the copy a pipeline step was given kept its columns in other blocks. So a frame is written as its columns' arrays, rebuilt column by column, and an
    extension array as its values and dtype (``pandas.array``). A frame with ``attrs``, or a
    subclass, keeps its own pickle.
    """
    import numpy as np  # pandas imports it

    try:
        if type(obj) is pd.DataFrame and not obj.attrs:
            columns = [obj.iloc[:, i] for i in range(obj.shape[1])]
            arrays = [c.to_numpy() if isinstance(c.dtype, np.dtype) else c.array for c in columns]
            return _frame_from_columns, (arrays, obj.columns, obj.index)
        if isinstance(obj, pd.api.extensions.ExtensionArray) and not isinstance(
            obj, pd.arrays.NumpyExtensionArray
        ):
            return pd.array, (np.asarray(obj, dtype=object), obj.dtype)
    except Exception:  # an array pandas cannot write so: its own pickle
        return None
    return None


def _frame_from_columns(arrays: list[Any], columns: Any, index: Any) -> Any:
    """The frame :func:`_pandas_reduce` wrote: its blocks as a new frame of these columns has."""
    import pandas as pd

    rows = pd.RangeIndex(len(index))
    frame = pd.DataFrame({i: pd.Series(a, index=rows) for i, a in enumerate(arrays)}, index=rows)
    frame.columns = columns
    frame.index = index
    return frame


def _torch_state_hash(model: Any) -> hashlib._Hash:
    import torch  # the model is a torch module: torch is imported already

    h = hashlib.sha256(b"torch-state-v1")
    h.update(repr(model).encode())
    try:
        h.update(inspect.getsource(type(model)).encode())
    except (OSError, TypeError):
        pass  # defined where no source exists (an interactive session): the structure stands in
    for key, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}".encode())
        # numpy has no bfloat16; widening to float32 is exact.
        h.update((t.float() if t.dtype == torch.bfloat16 else t).numpy().tobytes())
    return h


def _pipeline_hash(pipeline: Any) -> hashlib._Hash:
    """A transformers pipeline: its task, its model's weights, structure and config, and its
    tokenizer's full definition (a fast tokenizer's JSON; else its pickle)."""
    h = _torch_state_hash(pipeline.model)
    h.update(f"task={pipeline.task}|{pipeline.model.config.to_json_string()}".encode())
    tokenizer: Any = getattr(pipeline, "tokenizer", None)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode())
        h.update(repr(sorted(tokenizer.special_tokens_map.items())).encode())
    elif tokenizer is not None:
        h.update(pickle.dumps(tokenizer, protocol=4))
    return h


def directory_digest(model_dir: Path) -> str:
    """A 16-hex-digit digest of a saved model directory's content.

    Guarantees: the same for two saves of the same model, whatever their times: MLflow's
    volatile ``MLmodel`` fields (creation time, UUIDs, run ids) are left out and zip archives
    are digested member by member (their headers carry timestamps).

    Args:
        model_dir: the directory.

    Returns:
        The digest.
    """
    h = hashlib.sha256()
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(model_dir).as_posix()
        h.update(rel.encode())
        data = path.read_bytes()
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                data = b"".join(
                    n.encode() + hashlib.sha256(zf.read(n)).digest() for n in sorted(zf.namelist())
                )
        elif rel == "MLmodel":
            lines = [
                ln
                for ln in data.decode().splitlines()
                if not ln.strip().startswith(tuple(f"{k}:" for k in _VOLATILE))
            ]
            data = "\n".join(lines).encode()
        h.update(hashlib.sha256(data).digest())
    return h.hexdigest()[:16]

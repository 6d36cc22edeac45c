"""Turns a trained model object into an MLflow model directory the server can load.

The directory is content-addressed (a digest of the saved files, without MLflow's volatile
fields such as creation time and model UUID), so an unchanged model gives the same model URI
and therefore the same config hash: re-running a pipeline does not restart the server.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from zenml_model_deployers.errors import ConfigurationError
from zenml_model_deployers.local.service import make_tree_private, private_dir, zmd_home

_VOLATILE = ("utc_time_created", "model_uuid", "run_id", "model_id", "artifact_path")


def _digest(model_dir: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(model_dir).as_posix()
        h.update(rel.encode())
        data = path.read_bytes()
        if zipfile.is_zipfile(path):
            # Zip archives (e.g. skops) carry timestamps: hash their members instead.
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


def _object_digest(model: Any, input_example: Any) -> str | None:
    """A digest of the model's fitted state (pickle is deterministic for the same state).

    Saved files are not: skops archives name members after memory addresses.
    """
    import pickle

    import mlflow

    try:
        h = hashlib.sha256(pickle.dumps(model, protocol=4))
        h.update(pickle.dumps(input_example, protocol=4))
    except Exception:
        return None
    h.update(
        f"{type(model).__module__}.{type(model).__qualname__}|mlflow={mlflow.__version__}".encode()
    )
    return h.hexdigest()[:16]


def save_mlflow_model(model: Any, name: str, input_example: Any = None) -> str:
    """Saves a model object as an MLflow model under the zmd store; returns its local path.

    Supports scikit-learn estimators (``mlflow.sklearn``) and ``mlflow.pyfunc.PythonModel``.
    The same fitted model saves to the same path (and is saved only once).

    Args:
        model: the trained model.
        name: a name for the directory (the deployment name).
        input_example: optional example input, stored with the model (gives it a signature).

    Returns:
        An absolute path usable as an MLflow model URI.

    Raises:
        ConfigurationError: the model type is not supported.
    """
    import mlflow

    store = private_dir(zmd_home() / "models")
    digest = _object_digest(model, input_example)
    if digest and (store / f"{name}-{digest}" / "MLmodel").exists():
        return str(store / f"{name}-{digest}")
    with tempfile.TemporaryDirectory(dir=store) as tmp:
        target = Path(tmp) / "model"
        try:
            from sklearn.base import BaseEstimator
        except ImportError:  # pragma: no cover - sklearn ships with the mlflow extra
            BaseEstimator = ()
        if isinstance(model, BaseEstimator):
            mlflow.sklearn.save_model(model, str(target), input_example=input_example)
        elif isinstance(model, mlflow.pyfunc.PythonModel):
            mlflow.pyfunc.save_model(str(target), python_model=model, input_example=input_example)
        else:
            raise ConfigurationError(
                f"zmd-mlflow cannot package a {type(model).__module__}.{type(model).__name__}.",
                hint="pass a scikit-learn estimator or an mlflow.pyfunc.PythonModel, "
                "or save the model with MLflow yourself and pass `model_uri=`.",
            )
        final = store / f"{name}-{digest or _digest(target)}"
        make_tree_private(target)  # MLflow writes with the umask's modes
        if not final.exists():
            shutil.move(str(target), str(final))
    return str(final)

"""Turns a trained model object into an MLflow model directory the server can load.

The packaging itself (which MLflow flavor, which serialization, the digest) is the shared layer's
(:mod:`zenml_model_deployers.packaging`); this module keeps zmd-mlflow's store of packaged
models. A directory is content-addressed (a digest of the model's fitted state, or of the saved
files without MLflow's volatile fields), so an unchanged model gives the same model URI and
therefore the same config hash: re-running a pipeline does not restart the server.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from zenml_model_deployers.local.service import make_tree_private, private_dir, zmd_home
from zenml_model_deployers.packaging import (
    MLflowModelTarget,
    detect_library,
    directory_digest,
    model_digest,
)


def save_mlflow_model(model: Any, name: str, input_example: Any = None) -> str:
    """Saves a model object as an MLflow model under the zmd store; returns its local path.

    Supports what the packaging layer's MLflow target writes: scikit-learn estimators and
    pipelines, XGBoost, LightGBM, PyTorch modules and ``mlflow.pyfunc.PythonModel``.
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
    target = MLflowModelTarget()
    library = target.check(model, detect_library(model), "zmd-mlflow")
    store = private_dir(zmd_home() / "models")
    digest = model_digest(model, library, input_example)
    if digest and (store / f"{name}-{digest}" / "MLmodel").exists():
        return str(store / f"{name}-{digest}")
    with tempfile.TemporaryDirectory(dir=store) as tmp:
        target_dir = Path(tmp) / "model"
        target.write(model, library, target_dir, input_example)
        final = store / f"{name}-{digest or directory_digest(target_dir)}"
        make_tree_private(target_dir)  # MLflow writes with the umask's modes
        if not final.exists():
            shutil.move(str(target_dir), str(final))
    return str(final)

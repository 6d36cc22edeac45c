"""Model objects packaged for a cluster's model server and uploaded to the artifact store.

The upload path is content-addressed (a digest of the packaged files): the same model gives
the same URI, so the same config hash and revision, and nothing rolls on a re-run. The path
is written once, its marker file last, so a half-uploaded model is never served.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

from zenml_model_deployers.errors import ConfigurationError

# Written last: a directory without it is an interrupted upload.
MARKER = ".zmd-complete"
# The formats a model object is packaged in: the native ones of MLServer's and KServe's runtimes
# (packaging/native.py) and MLflow's.
RUNTIMES = ("sklearn", "xgboost", "lightgbm", "mlflow")


def directory_digest(path: Path) -> str:
    """A digest of a directory's files (relative names and contents).

    Args:
        path: the directory.

    Returns:
        16 hex characters.
    """
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file() and p.name != MARKER):
        h.update(f.relative_to(path).as_posix().encode())
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()[:16]


def package_model(
    model: Any,
    runtime: str,
    into: Path,
    input_example: Any = None,
    model_settings: bool = False,
    flavor: str = "zmd",
) -> Path:
    """Writes a model object in the layout the server runtime loads (the packaging layer's
    targets, :mod:`zenml_model_deployers.packaging`).

    - ``sklearn``, ``xgboost``, ``lightgbm``: the library's native file (``model.joblib``,
      ``model.json``, ``model.bst``), what MLServer's and KServe's runtimes for it load;
    - ``mlflow`` (MLServer's mlflow runtime): an MLflow model directory, with the model's own
      MLflow flavor.

    Args:
        model: the trained model.
        runtime: one of :data:`RUNTIMES`.
        into: an empty directory.
        input_example: example input (MLflow stores it with the model).
        model_settings: also write the ``model-settings.json`` naming MLServer's runtime
            (Seldon Core 2 loads a folder from it; Core 1 and KServe must not get one).
        flavor: the flavor asking, named in errors.

    Returns:
        The directory holding the packaged model.

    Raises:
        ConfigurationError: unknown runtime, or a model this runtime cannot hold.
    """
    from zenml_model_deployers.packaging import MLflowModelTarget, detect_library
    from zenml_model_deployers.packaging.native import NATIVE_TARGETS, write_model_settings

    if runtime not in RUNTIMES:
        raise ConfigurationError(
            f"Unknown model runtime {runtime!r}: use one of {', '.join(RUNTIMES)}.",
        )
    library = detect_library(model)
    if runtime == "mlflow":
        from zenml_model_deployers.flavors.mlflow.packaging import save_mlflow_model

        MLflowModelTarget().check(model, library, flavor)
        # The zmd store keeps it by the model's digest: the same model is the same files.
        shutil.copytree(
            save_mlflow_model(model, into.name, input_example), into, dirs_exist_ok=True
        )
    else:
        target = NATIVE_TARGETS[runtime]()
        target.write(model, target.check(model, library, flavor), into)
    if model_settings:
        write_model_settings(into, runtime, into.name)
    return into


def upload_directory(local: Path, prefix: str, name: str) -> str:
    """Copies a directory to ``<artifact store>/<prefix>/<name>/<digest>`` (once).

    Args:
        local: the packaged model directory.
        prefix: e.g. ``zmd-models``.
        name: e.g. the deployment name.

    Returns:
        The URI of the uploaded directory (the artifact store's scheme: s3://, gs://, a path).
    """
    from zenml.client import Client
    from zenml.io import fileio

    digest = directory_digest(local)
    root = str(Client().active_stack.artifact_store.path).rstrip("/")
    dest = f"{root}/{prefix}/{name}/{digest}"
    if fileio.exists(f"{dest}/{MARKER}"):
        return dest
    for f in sorted(p for p in local.rglob("*") if p.is_file()):
        target = f"{dest}/{f.relative_to(local).as_posix()}"
        fileio.makedirs(target.rsplit("/", 1)[0])
        fileio.copy(str(f), target, overwrite=True)
    with fileio.open(f"{dest}/{MARKER}", "w") as fh:
        fh.write(digest)
    return dest


def upload_model(
    model: Any,
    runtime: str,
    name: str,
    input_example: Any = None,
    model_settings: bool = False,
    flavor: str = "zmd",
) -> str:
    """Packages a model object for ``runtime`` and uploads it, content-addressed.

    Args:
        model: the trained model.
        runtime: one of :data:`RUNTIMES`.
        name: the deployment name (a folder of the upload path).
        input_example: example input.
        model_settings: also write MLServer's ``model-settings.json`` (Seldon Core 2).
        flavor: the flavor asking, named in errors.

    Returns:
        The model's storage URI.
    """
    with tempfile.TemporaryDirectory(prefix="zmd-pkg-") as tmp:
        into = Path(tmp) / name
        into.mkdir()
        packaged = package_model(model, runtime, into, input_example, model_settings, flavor)
        return upload_directory(packaged, "zmd-models", name)

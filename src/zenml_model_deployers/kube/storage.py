"""Model objects packaged for a cluster's model server and uploaded to the artifact store.

The upload path is content-addressed (a digest of the packaged files): the same model gives
the same URI, so the same config hash and revision, and nothing rolls on a re-run. The path
is written once, its marker file last, so a half-uploaded model is never served.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

from zenml_model_deployers.errors import ConfigurationError

# Written last: a directory without it is an interrupted upload.
MARKER = ".zmd-complete"
RUNTIMES = ("sklearn", "mlflow")


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


def package_model(model: Any, runtime: str, into: Path, input_example: Any = None) -> Path:
    """Writes a model object in the layout the server runtime loads.

    - ``sklearn`` (MLServer's sklearn runtime, Seldon's SKLEARN_SERVER): ``model.joblib``;
    - ``mlflow`` (MLServer's mlflow runtime, Seldon's MLFLOW_SERVER): an MLflow model directory.

    Args:
        model: the trained model.
        runtime: ``sklearn`` or ``mlflow``.
        into: an empty directory.
        input_example: example input (MLflow stores it with the model).

    Returns:
        The directory holding the packaged model.

    Raises:
        ConfigurationError: unknown runtime, or a model this runtime cannot hold.
    """
    if runtime == "sklearn":
        try:
            import joblib
            from sklearn.base import BaseEstimator
        except ImportError as e:
            raise ConfigurationError(
                f"Packaging for the sklearn runtime needs scikit-learn and joblib: {e}",
                hint="pip install 'zenml-model-deployers[seldon]'.",
            ) from e
        if not isinstance(model, BaseEstimator):
            raise ConfigurationError(
                f"The sklearn runtime cannot serve a {type(model).__module__}."
                f"{type(model).__name__}.",
                hint="pass a scikit-learn estimator, use runtime 'mlflow', or upload the model "
                "yourself and pass `model_uri=`.",
            )
        # protocol 4 and no compression: the same fitted state gives the same bytes.
        joblib.dump(model, into / "model.joblib", protocol=4)
        return into
    if runtime == "mlflow":
        from zenml_model_deployers.flavors.mlflow.packaging import save_mlflow_model

        return Path(save_mlflow_model(model, into.name, input_example))
    raise ConfigurationError(
        f"Unknown model runtime {runtime!r}: use one of {', '.join(RUNTIMES)}.",
    )


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


def upload_model(model: Any, runtime: str, name: str, input_example: Any = None) -> str:
    """Packages a model object for ``runtime`` and uploads it, content-addressed.

    Args:
        model: the trained model.
        runtime: ``sklearn`` or ``mlflow``.
        name: the deployment name (a folder of the upload path).
        input_example: example input.

    Returns:
        The model's storage URI.
    """
    with tempfile.TemporaryDirectory(prefix="zmd-pkg-") as tmp:
        into = Path(tmp) / name
        into.mkdir()
        packaged = package_model(model, runtime, into, input_example)
        return upload_directory(packaged, "zmd-models", name)

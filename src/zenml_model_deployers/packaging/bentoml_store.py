"""Writes model objects into BentoML's model store, as the library's MLflow model.

Why through MLflow and not BentoML's per-library savers: BentoML 1.4 deprecated its PyTorch
saver, its LightGBM saver keeps only the ``Booster`` (an ``LGBMClassifier`` loses its classes),
and a PyTorch module whose class lives in the user's project needs that source shipped. The
:class:`~zenml_model_deployers.packaging.mlflow_model.MLflowModelTarget` already writes every
library this layer knows so that it loads back anywhere in this environment, with a signature
from the input example; BentoML's own ``bentoml.mlflow.import_model`` puts that model in the
store, and ``bentoml.mlflow.load_model`` gives the server a pyfunc model, whose ``predict``
enforces the signature (column names and types, the tensor's dtype) as MLflow's server does.

A model is stored as ``<name>:<digest>`` (the layer's digest): the same fitted model is stored
once, so its bento, and the deployment's revision, stay the same.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel

from zenml_model_deployers.errors import DeploymentError
from zenml_model_deployers.packaging.digest import directory_digest, model_digest
from zenml_model_deployers.packaging.libraries import ModelLibrary, detect_library
from zenml_model_deployers.packaging.mlflow_model import MLflowModelTarget
from zenml_model_deployers.packaging.targets import PackagedModel, PackagingTarget

#: The folder of a stored model that holds the MLflow model (BentoML's own name for it).
MLFLOW_FOLDER = "mlflow_model"


class StoredModel(BaseModel):
    """A model object in BentoML's model store.

    Attributes:
        tag: ``name:version`` in the store.
        packaged: what was written (``path`` is the model's folder in the store).
        input_columns: the column names the model's signature names (it was given a
            DataFrame example), else None.
        input_dtype: the numpy dtype of a tensor signature (an array example), else None.
        requirements: the pip requirements MLflow recorded with the model (``mlflow`` first).
    """

    tag: str
    packaged: PackagedModel
    input_columns: list[str] | None = None
    input_dtype: str | None = None
    requirements: list[str] = []


class BentoModelStoreTarget(PackagingTarget):
    """A model in BentoML's local model store (``$BENTOML_HOME/models``), loadable with
    ``bentoml.mlflow.load_model``; the libraries are those of the MLflow target but
    transformers."""

    name: ClassVar[str] = "a BentoML model"
    # A transformers pipeline takes text, which the generated service's array input is not
    # made for; no test serves one (docs/models.md).
    libraries: ClassVar[frozenset[ModelLibrary]] = MLflowModelTarget.libraries - {
        ModelLibrary.TRANSFORMERS
    }

    def __init__(self, model_name: str, version: str | None = None) -> None:
        """A target that stores the model as ``model_name:version``.

        Args:
            model_name: the model's name in the store (a valid BentoML name: letters, digits,
                ``_``, ``-`` and ``.``).
            version: its version; None: a digest of the written MLflow model's files.
        """
        self.model_name = model_name
        self.version = version

    def write(
        self, model: Any, library: ModelLibrary, into: Path, input_example: Any = None
    ) -> PackagedModel:
        """Writes the MLflow model into ``into``, then imports it into BentoML's store.

        Guarantees: a tag in the store is never written again (the same tag is the same
        model): with ``version`` set and in the store, nothing is written, ``into`` included;
        else ``into`` holds the MLflow model BentoML copied.

        Args:
            model: the model object.
            library: its library.
            into: the scratch directory to create (the MLflow model, before BentoML copies it).
            input_example: an example input, or None (no signature).

        Returns:
            The stored model; ``path`` is its folder in the store, ``format`` is
            ``bentoml.mlflow`` + the MLflow flavor (e.g. ``bentoml.mlflow/mlflow.sklearn``).

        Raises:
            DeploymentError: BentoML refused to import the model (its message attached).
        """
        import bentoml
        from bentoml.exceptions import BentoMLException, NotFound

        if self.version is not None:
            try:
                stored = bentoml.models.get(f"{self.model_name}:{self.version}")
                fmt = str(stored.info.metadata.get("format", "mlflow.pyfunc"))
                return _packaged(stored, library, fmt)
            except NotFound:
                pass
        written = MLflowModelTarget().write(model, library, into, input_example)
        tag = f"{self.model_name}:{self.version or directory_digest(into)}"
        try:
            stored = bentoml.models.get(tag)
        except NotFound:
            try:
                bentoml.mlflow.import_model(
                    tag,
                    str(into),
                    labels={"zmd-library": library.value},
                    metadata={"format": written.format},
                )
                # What import_model returns still points at its build folder.
                stored = bentoml.models.get(tag)
            except BentoMLException as e:
                raise DeploymentError(
                    f"BentoML could not store the {written.format} model as '{tag}'.",
                    backend_message=f"{type(e).__name__}: {e}",
                ) from e
        return _packaged(stored, library, written.format)


def _packaged(stored: Any, library: ModelLibrary, mlflow_format: str) -> PackagedModel:
    return PackagedModel(
        path=Path(str(stored.path)), library=library, format=f"bentoml.mlflow/{mlflow_format}"
    )


def store_model(model: Any, name: str, input_example: Any = None) -> StoredModel:
    """Stores a model object in BentoML's model store once per fitted state.

    Args:
        model: the model object.
        name: its name in the store.
        input_example: optional example input (gives the model a signature: the server then
            takes a DataFrame by column names, or casts an array to the example's dtype).

    Returns:
        The stored model and what its signature asks of a request.

    Raises:
        ConfigurationError: the model is of no library this target writes (the message names
            those, and ``model_uri=`` as the way out).
        DeploymentError: BentoML refused to store it.
    """
    from mlflow.models import Model

    target = BentoModelStoreTarget(name)
    library = target.check(model, detect_library(model), "zmd-bentoml")
    target.version = model_digest(model, library, input_example)
    with tempfile.TemporaryDirectory(prefix="zmd-bentoml-") as tmp:
        packaged = target.write(model, library, Path(tmp) / "model", input_example)
    tag = f"{packaged.path.parent.name}:{packaged.path.name}"
    signature = Model.load(str(packaged.path / MLFLOW_FOLDER / "MLmodel")).signature
    columns: list[str] | None = None
    dtype: str | None = None
    if signature is not None and signature.inputs is not None:
        if signature.inputs.has_input_names():
            columns = list(signature.inputs.input_names())
        elif signature.inputs.is_tensor_spec():
            dtype = str(signature.inputs.numpy_types()[0])
    reqs = packaged.path / MLFLOW_FOLDER / "requirements.txt"
    requirements = [
        ln.strip()
        for ln in (reqs.read_text().splitlines() if reqs.is_file() else [])
        if ln.strip() and not ln.startswith(("#", "-"))
    ]
    return StoredModel(
        tag=tag,
        packaged=packaged,
        input_columns=columns,
        input_dtype=dtype,
        requirements=requirements,
    )

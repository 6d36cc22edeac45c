"""What the packaging layer hands a flavor, and the interface every packaging target implements.

A *target* is one format a serving runtime loads: an MLflow model directory (zmd-mlflow, the
``mlflow`` runtime of zmd-seldon/zmd-kserve, zmd-databricks), and later MLServer's native
formats (sklearn joblib, XGBoost ``.json``/``.ubj``, LightGBM ``.txt``) and BentoML's model
store. A flavor asks a target for its format; the library detection, the digest and the
unsupported-model error are the layer's, shared by all targets.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from zenml_model_deployers.errors import ConfigurationError
from zenml_model_deployers.packaging.libraries import SUPPORTED_OBJECTS, ModelLibrary


class PackagedModel(BaseModel):
    """A model object written in a target's format.

    Attributes:
        path: where it was written (a directory).
        library: the library the model object is of.
        format: the target's name for what it wrote, e.g. ``mlflow.sklearn`` or ``mlflow.xgboost``.
    """

    model_config = ConfigDict(frozen=True)

    path: Path
    library: ModelLibrary
    format: str


class PackagingTarget(ABC):
    """One format a serving runtime loads model objects from.

    Subclasses set ``name`` and ``libraries`` and implement :meth:`write`; :meth:`check` is
    shared, so every target refuses an unsupported model the same way, before writing anything.
    """

    #: The target's name, as error messages show it (e.g. ``MLflow model``).
    name: ClassVar[str]
    #: The libraries whose model objects this target writes.
    libraries: ClassVar[frozenset[ModelLibrary]]

    def check(self, model: Any, library: ModelLibrary | None, flavor: str) -> ModelLibrary:
        """Says whether this target writes ``model``; raises the layer's error when it does not.

        Args:
            model: the model object.
            library: what ``detect_library(model)`` said.
            flavor: the deployer flavor asking (named in the error).

        Returns:
            The library, when this target supports it.

        Raises:
            ConfigurationError: the model's library is not one this target writes; the message
                names the model's class, what is supported, and ``model_uri=`` as the way out.
        """
        if library is not None and library in self.libraries:
            return library
        supported = "; ".join(
            SUPPORTED_OBJECTS[lib] for lib in ModelLibrary if lib in self.libraries
        )
        raise ConfigurationError(
            f"{flavor} cannot package a {type(model).__module__}.{type(model).__qualname__} "
            f"as {self.name}: supported model objects are {supported}.",
            hint="pass one of those, or save the model in a format the server loads yourself "
            "(e.g. with `mlflow.<library>.save_model`) and pass its location as `model_uri=`.",
        )

    @abstractmethod
    def write(
        self, model: Any, library: ModelLibrary, into: Path, input_example: Any = None
    ) -> PackagedModel:
        """Writes ``model`` into the directory ``into`` (which must not exist yet).

        Implementations guarantee: the written model loads back in the serving runtime (in
        this environment) and predicts what ``model`` predicts in process; ``input_example``,
        when given, is stored with it and gives it a signature inferred from it.

        Args:
            model: the model object, already checked with :meth:`check`.
            library: its library.
            into: the directory to create.
            input_example: an example input (pandas DataFrame, numpy array), or None.

        Returns:
            What was written.
        """

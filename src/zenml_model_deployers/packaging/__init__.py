"""One packaging layer: turns a model object into the format a serving runtime loads.

Every flavor that takes a model object (``model=`` of a deploy step) packages it here:
:func:`detect_library` tells the model's library without importing any, a
:class:`PackagingTarget` writes the format its runtime loads (today :class:`MLflowModelTarget`;
MLServer's native formats and BentoML's model store are the next targets), and
:func:`model_digest` gives the same fitted model the same digest, so an unchanged model gives
the same revision and nothing restarts. See docs/models.md for what each flavor serves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zenml_model_deployers.packaging.digest import directory_digest, model_digest
from zenml_model_deployers.packaging.libraries import (
    SUPPORTED_OBJECTS,
    ModelLibrary,
    describe_supported,
    detect_library,
)
from zenml_model_deployers.packaging.mlflow_model import MLflowModelTarget
from zenml_model_deployers.packaging.targets import PackagedModel, PackagingTarget

__all__ = [
    "SUPPORTED_OBJECTS",
    "MLflowModelTarget",
    "ModelLibrary",
    "PackagedModel",
    "PackagingTarget",
    "describe_supported",
    "detect_library",
    "directory_digest",
    "model_digest",
    "package_model",
]


def package_model(
    model: Any, target: PackagingTarget, into: Path, input_example: Any = None, flavor: str = "zmd"
) -> PackagedModel:
    """Writes ``model`` in ``target``'s format into the new directory ``into``.

    Guarantees: an unsupported model raises before anything is written; the model's library is
    imported only if the model is of it (it already is, then).

    Args:
        model: the model object.
        target: the format to write.
        into: the directory to create.
        input_example: an example input stored with the model (gives it its signature).
        flavor: the deployer flavor asking, named in errors.

    Returns:
        What was written.

    Raises:
        ConfigurationError: ``target`` does not support the model's library.
    """
    library = target.check(model, detect_library(model), flavor)
    return target.write(model, library, into, input_example)

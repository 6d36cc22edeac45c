"""Writes model objects in the native formats of MLServer's and KServe's runtimes.

What each runtime loads, read from their code (MLServer 1.7.1's ``mlserver-sklearn``,
``mlserver-xgboost``, ``mlserver-lightgbm``; KServe's ``sklearnserver``, ``xgbserver``,
``lgbserver``):

- scikit-learn: ``model.joblib`` (MLServer looks for ``model.joblib``/``.pickle``/``.pkl``,
  KServe's sklearnserver for one file ending in ``.joblib``/``.pkl``/``.pickle``);
- XGBoost: ``model.json``, XGBoost's own JSON format (MLServer looks for ``model.bst``,
  ``model.json``, ``model.ubj`` and loads it into ``XGBRegressor`` or, when that refuses a
  classifier, ``XGBClassifier``; KServe's xgbserver takes one ``.bst``/``.json``/``.ubj`` file
  into a ``Booster``). JSON keeps the scikit-learn wrapper's attributes, so MLServer's
  ``predict`` gives an ``XGBClassifier``'s classes;
- LightGBM: ``model.bst`` in LightGBM's text format (both runtimes look for ``model.bst`` and
  load it into a ``Booster``, whose ``predict`` is an ``LGBMRegressor``'s prediction and an
  ``LGBMClassifier``'s probabilities).

Seldon Core 2 loads a model into MLServer from the ``model-settings.json`` in its folder (its
agent rewrites only the name and version; without the file it makes one from the first of the
``Model``'s requirements it knows and a file of that runtime's extensions, or fails), so a
target asked for it writes one naming the runtime and file (:func:`write_model_settings`).
KServe and Seldon Core 1 set the runtime and the model's name in MLServer's environment and need
none (a file in the folder would override both).

The files are byte-for-byte the same for the same fitted model, so a content-addressed upload
gives the same URI and the same revision.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from zenml_model_deployers.packaging.libraries import ModelLibrary
from zenml_model_deployers.packaging.targets import PackagedModel, PackagingTarget

#: The MLServer runtime (``implementation``) of each format MLServer loads: the classes
#: KServe's ``kserve-mlserver`` runtime sets as ``MLSERVER_MODEL_IMPLEMENTATION`` and Seldon's
#: samples name in ``model-settings.json``.
MLSERVER_RUNTIMES: dict[str, str] = {
    "sklearn": "mlserver_sklearn.SKLearnModel",
    "xgboost": "mlserver_xgboost.XGBoostModel",
    "lightgbm": "mlserver_lightgbm.LightGBMModel",
    "mlflow": "mlserver_mlflow.MLflowRuntime",
}


class NativeTarget(PackagingTarget):
    """One library's native file, as MLServer's and KServe's runtime for it loads it.

    Subclasses set ``fmt`` (the model format / Seldon requirement), ``file_name`` and
    ``libraries``, and implement :meth:`save`.
    """

    #: The model format: KServe's ``modelFormat``, Seldon's requirement.
    fmt: ClassVar[str]
    #: The file the runtime finds by its well-known name.
    file_name: ClassVar[str]

    def write(
        self, model: Any, library: ModelLibrary, into: Path, input_example: Any = None
    ) -> PackagedModel:
        """Saves ``model`` as ``into/<file_name>`` (``into`` is created if needed).

        Guarantees: the file loads in the format's MLServer runtime and KServe server (with
        the library's version of this environment) and predicts what ``model`` predicts in
        process; the same fitted model gives the same bytes. The native formats keep no input
        example (``input_example`` is ignored).

        Args:
            model: the model object.
            library: its library.
            into: the directory.
            input_example: ignored.

        Returns:
            The written model; ``format`` is the model format (e.g. ``xgboost``).
        """
        into.mkdir(parents=True, exist_ok=True)
        self.save(model, into / self.file_name)
        return PackagedModel(path=into, library=library, format=self.fmt)

    @abstractmethod
    def save(self, model: Any, path: Path) -> None:
        """Writes the model file.

        Args:
            model: the model object.
            path: the file to write.
        """


class SklearnJoblibTarget(NativeTarget):
    """scikit-learn estimators and pipelines as ``model.joblib``."""

    name: ClassVar[str] = "model.joblib (the sklearn runtimes' format)"
    libraries: ClassVar[frozenset[ModelLibrary]] = frozenset({ModelLibrary.SKLEARN})
    fmt: ClassVar[str] = "sklearn"
    file_name: ClassVar[str] = "model.joblib"

    def save(self, model: Any, path: Path) -> None:
        """Dumps with joblib, pickle protocol 4, uncompressed: the same fitted state gives the
        same bytes (the upload is named after them). The model goes through a pickle round
        trip first: a freshly fitted forest or column pipeline shares strings and numpy dtypes
        that its copy loaded from an artifact does not, which joblib writes as back-references,
        so the two dumped differently; after a round trip both are written alike. The round
        trip also zeroes the padding of a tree's node array (``digest.value_copy``),
        which is whatever the allocator left there.

        Args:
            model: the estimator.
            path: the file.
        """
        import joblib

        from zenml_model_deployers.packaging.digest import value_copy

        joblib.dump(value_copy(model), path, protocol=4)


class XGBoostJsonTarget(NativeTarget):
    """XGBoost models (scikit-learn wrappers and ``Booster``) as ``model.json``."""

    name: ClassVar[str] = "model.json (the xgboost runtimes' format)"
    libraries: ClassVar[frozenset[ModelLibrary]] = frozenset({ModelLibrary.XGBOOST})
    fmt: ClassVar[str] = "xgboost"
    file_name: ClassVar[str] = "model.json"

    def save(self, model: Any, path: Path) -> None:
        """``save_model`` in XGBoost's JSON format (a wrapper's scikit-learn attributes, such
        as a classifier's classes, are kept in it).

        Args:
            model: the model.
            path: the file.
        """
        model.save_model(str(path))


class LightGBMTextTarget(NativeTarget):
    """LightGBM models (scikit-learn wrappers and ``Booster``) as ``model.bst``."""

    name: ClassVar[str] = "model.bst (the lightgbm runtimes' format)"
    libraries: ClassVar[frozenset[ModelLibrary]] = frozenset({ModelLibrary.LIGHTGBM})
    fmt: ClassVar[str] = "lightgbm"
    file_name: ClassVar[str] = "model.bst"

    def save(self, model: Any, path: Path) -> None:
        """The booster's ``save_model``: LightGBM's text format, whatever the file's suffix.

        Args:
            model: an ``LGBMModel`` (its ``booster_``) or a ``Booster``.
            path: the file.
        """
        booster = getattr(model, "booster_", model)
        booster.save_model(str(path))


#: The native target of each format.
NATIVE_TARGETS: dict[str, type[NativeTarget]] = {
    t.fmt: t for t in (SklearnJoblibTarget, XGBoostJsonTarget, LightGBMTextTarget)
}

#: The format a model object of each library is served in by default: its own runtime's,
#: else (PyTorch, pyfunc: MLServer has no native runtime for them) an MLflow model.
DEFAULT_FORMATS: dict[ModelLibrary, str] = {
    ModelLibrary.SKLEARN: "sklearn",
    ModelLibrary.XGBOOST: "xgboost",
    ModelLibrary.LIGHTGBM: "lightgbm",
    ModelLibrary.PYTORCH: "mlflow",
    ModelLibrary.PYFUNC: "mlflow",
}


def write_model_settings(into: Path, fmt: str, name: str) -> Path:
    """Writes the ``model-settings.json`` Seldon Core 2's agent loads a folder into MLServer with.

    Args:
        into: the packaged model's folder.
        fmt: its format (a key of :data:`MLSERVER_RUNTIMES`).
        name: the model's name (Seldon's agent replaces it with the ``Model``'s own).

    Returns:
        The file written.
    """
    target = NATIVE_TARGETS.get(fmt)
    settings = {
        "name": name,
        "implementation": MLSERVER_RUNTIMES[fmt],
        "parameters": {"uri": f"./{target.file_name}" if target else "./"},
    }
    path = into / "model-settings.json"
    path.write_text(json.dumps(settings, indent=1, sort_keys=True) + "\n")
    return path

"""Recognises which machine-learning library a model object comes from, without importing any.

A model object's class (and its bases) name the modules they are defined in; that is enough to
tell a scikit-learn estimator from an XGBoost or PyTorch model. Checking names instead of
``isinstance`` keeps packaging from importing libraries the model is not of: deploying a
scikit-learn model never imports torch (seconds, and hundreds of MB of memory).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ModelLibrary(StrEnum):
    """A library whose model objects the packaging layer knows how to save."""

    SKLEARN = "sklearn"
    XGBOOST = "xgboost"
    LIGHTGBM = "lightgbm"
    PYTORCH = "pytorch"
    TRANSFORMERS = "transformers"
    PYFUNC = "pyfunc"


#: What each library's supported objects are, as the error for an unsupported model lists them.
SUPPORTED_OBJECTS: dict[ModelLibrary, str] = {
    ModelLibrary.SKLEARN: "scikit-learn estimators and pipelines (sklearn.base.BaseEstimator)",
    ModelLibrary.XGBOOST: "XGBoost models (xgboost.XGBModel such as XGBClassifier, xgboost.Booster)",
    ModelLibrary.LIGHTGBM: "LightGBM models (lightgbm.LGBMModel such as LGBMRegressor, lightgbm.Booster)",
    ModelLibrary.PYTORCH: "PyTorch modules (torch.nn.Module)",
    ModelLibrary.TRANSFORMERS: "Hugging Face transformers pipelines (transformers.Pipeline)",
    ModelLibrary.PYFUNC: "MLflow Python models (mlflow.pyfunc.PythonModel)",
}

# (library, module prefix of a base class, base class names). Checked in this order: XGBoost's
# and LightGBM's scikit-learn wrappers also derive from sklearn's BaseEstimator, and their own
# MLflow flavors (native formats) are the better fit.
_MARKERS: tuple[tuple[ModelLibrary, str, frozenset[str]], ...] = (
    (ModelLibrary.PYFUNC, "mlflow.pyfunc", frozenset({"PythonModel"})),
    (ModelLibrary.XGBOOST, "xgboost", frozenset({"XGBModel", "Booster"})),
    (ModelLibrary.LIGHTGBM, "lightgbm", frozenset({"LGBMModel", "Booster"})),
    (ModelLibrary.TRANSFORMERS, "transformers", frozenset({"Pipeline"})),
    (ModelLibrary.PYTORCH, "torch", frozenset({"Module"})),
    (ModelLibrary.SKLEARN, "sklearn", frozenset({"BaseEstimator"})),
)


def _is_module(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def detect_library(model: Any) -> ModelLibrary | None:
    """Tells which library ``model`` is a model object of.

    Guarantees: imports nothing (reads only the module and class names in ``type(model)``'s
    MRO); a subclass of a supported base (a user's own estimator or ``nn.Module``) is
    recognised as its library; classes are recognised by their library's base classes, so
    an object that only has a ``predict`` method is not taken for a model.

    Args:
        model: any object.

    Returns:
        The library, or None when no supported library's base class is among its bases.
    """
    bases = [(getattr(c, "__module__", "") or "", c.__name__) for c in type(model).__mro__]
    for library, prefix, names in _MARKERS:
        if any(_is_module(module, prefix) and name in names for module, name in bases):
            return library
    return None


def describe_supported() -> str:
    """The supported model objects, one phrase each, for error messages and docs."""
    return "; ".join(SUPPORTED_OBJECTS.values())

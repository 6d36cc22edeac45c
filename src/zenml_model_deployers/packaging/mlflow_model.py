"""Writes model objects as MLflow models, each with the MLflow flavor of its library.

scikit-learn (and LightGBM's scikit-learn wrappers) are saved with cloudpickle: MLflow 3's
default, skops, refuses many fitted estimators at save time ("Untrusted types found in the
file: ['sklearn.tree._tree.Tree']" for every tree ensemble). PyTorch modules are saved as a
pickle (MLflow's default, ``pt2``, exports a program fixed to the example's batch size), with
the source of the module's class when the server could not import it otherwise.

Each library's model gets that flavor's own pinned requirements (e.g. ``scikit-learn==1.9.1``,
``cloudpickle==3.1.3``) instead of MLflow's inference, which imports the saved model in a
subprocess (6-7 s on a loaded 2-core machine, most of a deploy's time) and which zmd-mlflow's
servers, running in this environment, never read. A pyfunc model keeps the inference: its code
may import anything.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
import sysconfig
from pathlib import Path
from typing import Any, ClassVar

from zenml_model_deployers.packaging.libraries import ModelLibrary
from zenml_model_deployers.packaging.targets import PackagedModel, PackagingTarget

# How each library's MLflow flavor saves (beyond the model, path, example and requirements).
_SAVE_OPTIONS: dict[ModelLibrary, dict[str, Any]] = {
    ModelLibrary.SKLEARN: {"serialization_format": "cloudpickle"},
    ModelLibrary.LIGHTGBM: {"serialization_format": "cloudpickle"},
    ModelLibrary.PYTORCH: {"serialization_format": "pickle"},
}


class MLflowModelTarget(PackagingTarget):
    """An MLflow model directory, loadable with ``mlflow.pyfunc.load_model`` and servable with
    ``mlflow models serve``; written with the library's own MLflow flavor."""

    name: ClassVar[str] = "an MLflow model"
    libraries: ClassVar[frozenset[ModelLibrary]] = frozenset(ModelLibrary)

    def write(
        self, model: Any, library: ModelLibrary, into: Path, input_example: Any = None
    ) -> PackagedModel:
        """Saves ``model`` with ``mlflow.<library>.save_model`` into ``into``.

        Guarantees: the directory loads with ``mlflow.pyfunc.load_model`` in this environment
        (a server started elsewhere on the same environment included: the source of a model
        class that only this process can import is copied into the model's ``code/``); its
        signature is inferred from ``input_example`` (column names and types of a DataFrame,
        optional where the example has missing values; dtype and shape of an array).

        Args:
            model: the model object.
            library: its library.
            into: the directory to create.
            input_example: an example input, or None (no signature).

        Returns:
            The written model; ``format`` is the MLflow flavor (e.g. ``mlflow.sklearn``).
        """
        import mlflow

        path = str(into)
        input_example = plain_example(input_example)
        if library is ModelLibrary.PYFUNC:
            mlflow.pyfunc.save_model(
                path,
                python_model=model,
                code_paths=own_code_paths(model) or None,
                input_example=input_example,
            )
        else:
            flavor = importlib.import_module(f"mlflow.{library.value}")
            options: dict[str, Any] = dict(_SAVE_OPTIONS.get(library, {}))
            if library is ModelLibrary.PYTORCH:
                options["code_paths"] = own_code_paths(model) or None
            cloudpickled = options.get("serialization_format") == "cloudpickle"
            if library is ModelLibrary.TRANSFORMERS:
                # MLflow's own list asks for torchvision, which a text pipeline does not use.
                requirements = pinned_requirements("transformers", "torch", "tokenizers")
            else:
                requirements = flavor.get_default_pip_requirements(
                    **({"include_cloudpickle": True} if cloudpickled else {})
                )
            flavor.save_model(
                model,
                path,
                input_example=input_example,
                pip_requirements=requirements,
                **options,
            )
        return PackagedModel(path=into, library=library, format=f"mlflow.{library.value}")


def pinned_requirements(*distributions: str) -> list[str]:
    """``name==version`` of each installed distribution (a local label such as ``+cpu`` left
    out, as MLflow does, so that the line installs from PyPI); missing ones are skipped.

    Args:
        distributions: distribution names.

    Returns:
        The requirement lines.
    """
    out = []
    for name in distributions:
        try:
            out.append(f"{name}=={importlib.metadata.version(name).split('+')[0]}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def plain_example(example: Any) -> Any:
    """The input example with a DataFrame's categorical columns as their categories' values.

    MLflow infers no signature from a ``category`` column (it warns "Can not safely convert
    category to <U0" and saves none), and a request's JSON carries the values anyway; scikit-learn,
    XGBoost and LightGBM models fitted on categories predict the same from the values.

    Args:
        example: the input example (anything; only a pandas DataFrame is changed).

    Returns:
        The example, or a copy whose ``category`` columns hold their values.
    """
    if not type(example).__module__.startswith("pandas") or not hasattr(example, "dtypes"):
        return example
    cats = {
        c: example[c].cat.categories.dtype for c, t in example.dtypes.items() if t == "category"
    }
    return example.astype(cats) if cats else example


def own_code_paths(model: Any) -> list[str]:
    """The source files or packages of ``model``'s classes that no installed distribution holds.

    A class defined in the user's project (a script's neighbour module, a folder on
    ``sys.path`` or ``PYTHONPATH``) is pickled by reference, and the model server, which runs in
    a directory of its own, could not import it. These paths go into the model's ``code/``,
    which MLflow puts on ``sys.path`` when it loads the model. Classes of installed packages
    (editable installs included) and of ``__main__`` (pickled by value) need nothing.

    Args:
        model: the model object.

    Returns:
        Absolute paths: a module's file, or a package's top-level folder; empty when none.
    """
    installed = importlib.metadata.packages_distributions()
    system = {
        Path(p).resolve()
        for k in ("stdlib", "platstdlib", "purelib", "platlib")
        if (p := sysconfig.get_paths().get(k))
    }
    out: list[str] = []
    for cls in type(model).__mro__:
        top = cls.__module__.split(".")[0]
        if top in ("__main__", "builtins") or top in installed:
            continue
        module = sys.modules.get(top)
        if module is None:
            continue
        if getattr(module, "__path__", None):  # a package: ship its top-level folder
            root = Path(list(module.__path__)[0]).resolve()
        elif getattr(module, "__file__", None):
            root = Path(str(module.__file__)).resolve()
        else:
            continue
        if any(root.is_relative_to(s) for s in system) or str(root) in out:
            continue
        out.append(str(root))
    return out

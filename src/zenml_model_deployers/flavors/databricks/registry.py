"""Registers a trained model in Unity Catalog through MLflow (``registry_uri="databricks-uc"``).

Why a module of its own: this is packaging (a model object becomes a Unity Catalog model
version, through MLflow, not databricks-sdk), which ``backend.py`` (serving endpoints) does
not do and only ``deployer.register_model`` needs; it moves into the cross-flavor packaging
layer when that exists (DESIGN.md, "packaging").

The same fitted model registers once: each version carries a digest of the model's state as
a tag, and an existing version with the same digest is reused, so re-running a pipeline with
an unchanged model deploys nothing new.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from zenml_model_deployers import secrets
from zenml_model_deployers.errors import ConfigurationError, DeploymentError
from zenml_model_deployers.flavors.databricks.flavor import DatabricksDeployerConfig

DIGEST_TAG = "zmd_model_digest"


def _uses_databricks(uri: str) -> bool:
    return uri.startswith("databricks")


def register_model(
    component: DatabricksDeployerConfig, model: Any, name: str, input_example: Any
) -> str:
    """Logs ``model`` with an inferred signature and registers it as a version of ``name``.

    Args:
        component: the deployer's settings (registry and tracking URIs, credentials).
        model: a scikit-learn estimator or an ``mlflow.pyfunc.PythonModel``.
        name: ``catalog.schema.model``.
        input_example: example input for the signature.

    Returns:
        The version (an existing one when the same model was registered before).

    Raises:
        ConfigurationError: the model type is not supported.
        DeploymentError: MLflow or Unity Catalog refused (their message included).
    """
    import mlflow
    from mlflow.models import infer_signature
    from mlflow.tracking import MlflowClient

    from zenml_model_deployers.flavors.mlflow.packaging import _object_digest

    dump = component.model_dump()  # references, not values
    needs_env = _uses_databricks(component.registry_uri) or _uses_databricks(component.tracking_uri)
    env = mlflow_databricks_env(_Refs(dump)) if needs_env else contextlib.nullcontext()
    digest = _object_digest(model, input_example)
    try:
        from sklearn.base import BaseEstimator
    except ImportError:  # pragma: no cover - sklearn ships with the databricks extra
        BaseEstimator = ()
    if not isinstance(model, BaseEstimator | mlflow.pyfunc.PythonModel):
        raise ConfigurationError(
            f"zmd-databricks cannot register a {type(model).__module__}.{type(model).__name__}.",
            hint="pass a scikit-learn estimator or an mlflow.pyfunc.PythonModel, or register "
            "the model yourself and pass registered_model_name= and model_version=.",
        )
    old_tracking, old_registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    try:
        with env:
            mlflow.set_tracking_uri(component.tracking_uri)
            mlflow.set_registry_uri(component.registry_uri)
            client = MlflowClient(
                tracking_uri=component.tracking_uri, registry_uri=component.registry_uri
            )
            if digest:
                existing = _version_with_digest(client, name, digest)
                if existing is not None:
                    return existing
            if isinstance(model, BaseEstimator):
                output = model.predict(input_example)
            else:
                output = model.predict(None, input_example)
            signature = infer_signature(input_example, output)
            with mlflow.start_run(run_name=f"zmd-register-{name.rsplit('.', 1)[-1]}"):
                if isinstance(model, BaseEstimator):
                    # cloudpickle: MLflow 3's default (skops) refuses many fitted estimators
                    # (e.g. trees) as "untrusted types" at save time.
                    info = mlflow.sklearn.log_model(
                        model,
                        name="model",
                        serialization_format="cloudpickle",
                        registered_model_name=name,
                        signature=signature,
                        input_example=input_example,
                    )
                else:
                    info = mlflow.pyfunc.log_model(
                        name="model",
                        python_model=model,
                        registered_model_name=name,
                        signature=signature,
                        input_example=input_example,
                    )
            version = str(info.registered_model_version)
            if digest:
                client.set_model_version_tag(name, version, DIGEST_TAG, digest)
            return version
    except (ConfigurationError, DeploymentError):
        raise
    except Exception as e:
        raise DeploymentError(
            f"Registering the model as {name} in {component.registry_uri} failed.",
            backend_message=f"{type(e).__name__}: {e}",
            hint=(
                "check the catalog and schema exist and the credentials may create models "
                "in them (USE CATALOG, USE SCHEMA, CREATE MODEL)."
                if _uses_databricks(component.registry_uri)
                else None
            ),
        ) from e
    finally:
        mlflow.set_tracking_uri(old_tracking)
        mlflow.set_registry_uri(old_registry)


def _version_with_digest(client: Any, name: str, digest: str) -> str | None:
    try:
        versions = client.search_model_versions(f"name='{name}'")
    except Exception:
        # A model that does not exist yet has no versions.
        return None
    for v in versions:
        if (v.tags or {}).get(DIGEST_TAG) == digest:
            return str(v.version)
    return None


@contextlib.contextmanager
def mlflow_databricks_env(config: Any) -> Iterator[None]:
    """Sets the environment MLflow reads to reach a Databricks workspace, for one call only
    (MLflow's Databricks auth reads env vars); restores it after.

    Args:
        config: holds ``host`` and the credential references (a component or deployment
            config).

    Yields:
        Nothing.
    """
    values: dict[str, str] = {"DATABRICKS_HOST": config.host}
    if getattr(config, "token", None):
        values["DATABRICKS_TOKEN"] = secrets.resolve(config.token)
    elif getattr(config, "client_id", None):
        values["DATABRICKS_CLIENT_ID"] = secrets.resolve(config.client_id)
        values["DATABRICKS_CLIENT_SECRET"] = secrets.resolve(config.client_secret)
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class _Refs:
    """Host and credential references in the shape ``mlflow_databricks_env`` reads."""

    def __init__(self, dump: dict[str, Any]) -> None:
        self.host = dump.get("host") or ""
        self.token = dump.get("token")
        self.client_id = dump.get("client_id")
        self.client_secret = dump.get("client_secret")

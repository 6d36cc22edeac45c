"""Registers a trained model in Unity Catalog through MLflow (``registry_uri="databricks-uc"``).

Why a module of its own: this is packaging (a model object becomes a Unity Catalog model
version, through MLflow, not databricks-sdk), which ``backend.py`` (serving endpoints) does
not do and only ``deployer.register_model`` needs. The model is written by the cross-flavor
packaging layer (:class:`~zenml_model_deployers.packaging.MLflowModelTarget`: the library's own
MLflow flavor, a serialization that loads back, a signature inferred from the input example,
which Unity Catalog requires); this module logs that directory to an MLflow run and registers it.

The same fitted model registers once: each version carries the layer's digest of the model as
a tag, and an existing version with the same digest is reused, so re-running a pipeline with
an unchanged model deploys nothing new.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from zenml_model_deployers import secrets
from zenml_model_deployers.errors import ConfigurationError, DeploymentError
from zenml_model_deployers.flavors.databricks.flavor import DatabricksDeployerConfig
from zenml_model_deployers.packaging import MLflowModelTarget, detect_library, model_digest

DIGEST_TAG = "zmd_model_digest"


def _uses_databricks(uri: str) -> bool:
    return uri.startswith("databricks")


def register_model(
    component: DatabricksDeployerConfig, model: Any, name: str, input_example: Any
) -> str:
    """Logs ``model`` (as its library's MLflow model) and registers it as a version of ``name``.

    Args:
        component: the deployer's settings (registry and tracking URIs, credentials).
        model: a model object of a library the packaging layer writes as an MLflow model
            (scikit-learn, XGBoost, LightGBM, PyTorch, ``mlflow.pyfunc.PythonModel``).
        name: ``catalog.schema.model``.
        input_example: example input for the signature.

    Returns:
        The version (an existing one when the same model was registered before).

    Raises:
        ConfigurationError: the model type is not supported (nothing was written).
        DeploymentError: MLflow or Unity Catalog refused (their message included).
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    target = MLflowModelTarget()
    try:
        library = target.check(model, detect_library(model), "zmd-databricks")
    except ConfigurationError as e:
        raise ConfigurationError(
            str(e).splitlines()[0],
            hint="pass one of those, or register the model yourself and pass "
            "registered_model_name= and model_version= (or model_uri='models:/c.s.m/N').",
        ) from e
    dump = component.model_dump()  # references, not values
    needs_env = _uses_databricks(component.registry_uri) or _uses_databricks(component.tracking_uri)
    env = mlflow_databricks_env(_Refs(dump)) if needs_env else contextlib.nullcontext()
    digest = model_digest(model, library, input_example)
    old_tracking, old_registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    try:
        with env, tempfile.TemporaryDirectory(prefix="zmd-uc-") as tmp:
            mlflow.set_tracking_uri(component.tracking_uri)
            mlflow.set_registry_uri(component.registry_uri)
            client = MlflowClient(
                tracking_uri=component.tracking_uri, registry_uri=component.registry_uri
            )
            if digest:
                existing = _version_with_digest(client, name, digest)
                if existing is not None:
                    return existing
            written = target.write(model, library, Path(tmp) / "model", input_example)
            with mlflow.start_run(run_name=f"zmd-register-{name.rsplit('.', 1)[-1]}") as run:
                mlflow.log_artifacts(str(written.path), artifact_path="model")
                mlflow.set_tag("zmd_model_format", written.format)
            mv = mlflow.register_model(f"runs:/{run.info.run_id}/model", name)
            version = str(mv.version)
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

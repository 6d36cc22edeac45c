"""The model side of the Databricks double: a local MLflow registry standing in for Unity
Catalog, and the served entities that load and run its model versions (``mlflow.pyfunc``).

Split from ``databricks_double.py`` (the API, endpoints and their states) by job: this
module knows MLflow, that one HTTP. Where the stand-in differs from Unity Catalog is said in
``databricks_double``'s module docstring.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

_SECRET_REF = re.compile(r"^\{\{secrets/([^/}]+)/([^/}]+)\}\}$")


class ApiError(Exception):
    """An error answered as Databricks does: HTTP status + ``error_code`` + ``message``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        """Builds it.

        Args:
            status: HTTP status.
            code: Databricks error code.
            message: the message.
        """
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class Entity:
    """A served entity as the double holds it.

    Attributes:
        spec: the entity as sent (``ServedEntityInput``'s JSON).
        deployment: ``DEPLOYMENT_CREATING``, ``DEPLOYMENT_READY`` or ``DEPLOYMENT_FAILED``.
        message: its ``deployment_state_message``.
        model: the loaded pyfunc model (once ready).
        env: its environment, ``{{secrets/..}}`` references resolved (what the model got).
        logs: its server log lines.
        requests: invocations it answered.
        errors: invocations that failed in it.
    """

    spec: dict[str, Any]
    deployment: str = "DEPLOYMENT_CREATING"
    message: str = "Served entity is being created."
    model: Any = None
    env: dict[str, str] = field(default_factory=dict)
    logs: list[str] = field(default_factory=list)
    requests: int = 0
    errors: int = 0

    @property
    def name(self) -> str:
        """The served entity's name."""
        return str(self.spec["name"])

    def same_spec(self, other: dict[str, Any]) -> bool:
        """Tells whether ``other`` describes this entity unchanged (then it keeps serving)."""
        return self.spec == other


def registry_client(registry_uri: str) -> Any:
    """An MLflow client of the stand-in registry.

    Args:
        registry_uri: the MLflow registry standing in for Unity Catalog.

    Returns:
        ``MlflowClient``.
    """
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=registry_uri, registry_uri=registry_uri)


def check_model(
    registry_uri: str, forbidden: Collection[str], name: str, version: str | int
) -> Any:
    """Reads a model version as Unity Catalog would answer the caller.

    Args:
        registry_uri: the stand-in registry.
        forbidden: model names the caller may not use.
        name: the model's full name.
        version: the version.

    Returns:
        MLflow's ``ModelVersion``.

    Raises:
        ApiError: ``PERMISSION_DENIED`` or ``RESOURCE_DOES_NOT_EXIST``.
    """
    if name in forbidden:
        raise ApiError(
            403,
            "PERMISSION_DENIED",
            f"User does not have EXECUTE on Routine or Model '{name}'.",
        )
    try:
        return registry_client(registry_uri).get_model_version(name, str(version))
    except Exception as e:
        raise ApiError(
            404,
            "RESOURCE_DOES_NOT_EXIST",
            f"Routine or Model '{name}' version {version} does not exist.",
        ) from e


def model_version_json(full_name: str, mv: Any) -> dict[str, Any]:
    """A model version as ``GET /api/2.1/unity-catalog/models/{name}/versions/{v}`` answers.

    Args:
        full_name: ``catalog.schema.model``.
        mv: MLflow's ``ModelVersion``.

    Returns:
        The JSON.
    """
    catalog, _, rest = full_name.partition(".")
    schema, _, model = rest.partition(".")
    return {
        "model_name": model or full_name,
        "catalog_name": catalog,
        "schema_name": schema,
        "version": int(mv.version),
        "status": "READY",
        "source": mv.source,
        "run_id": mv.run_id,
        "storage_location": mv.source,
    }


def load_entity(registry_uri: str, entity: Entity, secret: Callable[[str, str], str | None]) -> str:
    """Loads a served entity's model and environment (``{{secrets/..}}`` references resolved).

    Args:
        registry_uri: the stand-in registry.
        entity: the served entity (its ``model``, ``env`` and ``logs`` are set).
        secret: (scope, key) -> the workspace's secret value, or None.

    Returns:
        Databricks' kind of failure message, or "" when it loaded.
    """
    import mlflow.pyfunc

    spec = entity.spec
    entity.logs.append(
        f"Loading model {spec['entity_name']} version {spec['entity_version']} "
        f"(workload {spec.get('workload_type', 'CPU')}/{spec.get('workload_size', 'Small')})"
    )
    env: dict[str, str] = {}
    for key, value in (spec.get("environment_vars") or {}).items():
        m = _SECRET_REF.match(value)
        if m is None:
            env[key] = value
            continue
        resolved = secret(m.group(1), m.group(2))
        if resolved is None:
            msg = (
                f"Secret does not exist with scope: {m.group(1)} and key: {m.group(2)} "
                f"(environment variable {key})."
            )
            entity.logs.append(msg)
            return msg
        env[key] = resolved
    entity.env = env
    try:
        uri = registry_client(registry_uri).get_model_version_download_uri(
            spec["entity_name"], str(spec["entity_version"])
        )
        entity.model = mlflow.pyfunc.load_model(uri)
    except Exception as e:
        tail = traceback.format_exception_only(type(e), e)[-1].strip()
        entity.logs += traceback.format_exc().splitlines()[-6:]
        return (
            f"Served entity {entity.name} failed to deploy: the model could not be loaded. {tail}"
        )
    entity.logs.append("Model loaded; serving requests.")
    return ""


def predict(entity: Entity, body: dict[str, Any]) -> Any:
    """Runs an invocation body through the entity's model, as MLflow's scoring server does.

    Args:
        entity: a loaded served entity.
        body: the invocation body (one of MLflow's input forms, optional ``params``).

    Returns:
        The predictions (plain lists or records).

    Raises:
        ApiError: ``BAD_REQUEST`` with the model's error.
    """
    from mlflow.pyfunc.scoring_server import SUPPORTED_FORMATS, infer_and_parse_data

    try:
        # MLflow's own parsing of the input forms (what its scoring server does).
        inputs = {k: v for k, v in body.items() if k in SUPPORTED_FORMATS}
        data = infer_and_parse_data(inputs, schema=entity.model.metadata.get_input_schema())
        params = body.get("params")
        out = entity.model.predict(data, params=params) if params else entity.model.predict(data)
    except Exception as e:
        raise ApiError(
            400,
            "BAD_REQUEST",
            f"Encountered an unexpected error while evaluating the model: {e}",
        ) from e
    if hasattr(out, "tolist"):
        return out.tolist()
    if hasattr(out, "to_dict"):
        return out.to_dict(orient="records")
    return out

"""The Databricks deploy step (flavor `zmd-databricks`).

Imports no Databricks or MLflow module at import time: those load inside the step.
"""

from __future__ import annotations

from typing import Annotated, Any

from zenml import step

from zenml_model_deployers.materializer import ServiceMaterializer
from zenml_model_deployers.service import DeploymentService

from ._body import deploy_with


@step(enable_cache=False, output_materializers=ServiceMaterializer)
def databricks_deployer_step(
    model: Any = None,
    model_uri: str | None = None,
    registered_model_name: str | None = None,
    model_version: str | int | None = None,
    input_example: Any = None,
    workload_size: str = "Small",
    workload_type: str | None = None,
    scale_to_zero_enabled: bool = True,
    env: dict[str, str] | None = None,
    tags: dict[str, str] | None = None,
    inference_table: dict[str, str] | None = None,
    query_format: str = "auto",
    canary_percent: int | None = None,
    rollout: dict[str, Any] | None = None,
    deployment_name: str | None = None,
    model_name: str = "",
    deploy_decision: bool = True,
    policy: str = "update",
    timeout: float | None = None,
    smoke_input: Any = None,
) -> Annotated[DeploymentService, "databricks_deployment"]:
    """Deploys a model to a Databricks Model Serving endpoint (flavor `zmd-databricks`).

    Give the trained ``model`` (registered in Unity Catalog as ``registered_model_name``
    through MLflow, signature inferred from ``input_example``), or an existing
    ``registered_model_name`` + ``model_version``, or ``model_uri="models:/c.s.m/N"``. A later
    run with a new version updates the same endpoint in place (same URL); the previous served
    entity serves until the new config is ready, and a failed update is undone.

    Args:
        model: a model object to register (scikit-learn, XGBoost, LightGBM, PyTorch,
            mlflow.pyfunc.PythonModel: docs/models.md).
        model_uri: ``models:/catalog.schema.model/<version>``.
        registered_model_name: ``catalog.schema.model``.
        model_version: an existing version of it (without ``model``).
        input_example: a few rows of input (Unity Catalog needs the signature it gives).
        workload_size: ``Small``, ``Medium`` or ``Large``.
        workload_type: e.g. ``CPU`` or ``GPU_SMALL`` (default: Databricks' CPU).
        scale_to_zero_enabled: an idle endpoint scales to zero (costs nothing).
        env: environment variables; values may be ``{{secrets/scope/key}}`` (Databricks) or
            ``{{secret.key}}`` (ZenML, stored in a Databricks secret scope for the endpoint).
        tags: the endpoint's tags.
        inference_table: ``{"catalog_name": ..., "schema_name": ..., "table_name_prefix":
            ...}``: log requests and responses through the AI gateway.
        query_format: what ``service.predict`` sends (``auto`` picks by the data's type).
        canary_percent: 1-99: keep the serving version and send this share to the new one,
            until `zmd models promote|rollback` finishes the canary.
        rollout: with policy "canary": steps and gates (CanaryRollout's fields: steps,
            interval, max_error_rate, max_p95_ratio, min_requests).
        deployment_name: the endpoint's name (default: from the model's name).
        model_name: the model's name (default: the registered model's last part).
        deploy_decision: False keeps what serves now (nothing is registered either).
        policy: update (default), replace, side_by_side or fail.
        timeout: seconds to wait until the endpoint serves (default: the component's).
        smoke_input: an input that must predict before the revision counts as ready.

    Returns:
        The service (saved in full as an artifact; no credential in it).
    """
    from zenml_model_deployers.errors import ConfigurationError
    from zenml_model_deployers.flavors import get_deployer
    from zenml_model_deployers.flavors.databricks.config import model_uri_for
    from zenml_model_deployers.flavors.databricks.deployer import DatabricksDeployer

    deployer = get_deployer("zmd-databricks")
    assert isinstance(deployer, DatabricksDeployer)
    given = sum(x is not None for x in (model, model_uri, model_version))
    if given != 1 or (model_uri is None and not registered_model_name):
        raise ConfigurationError(
            "Give the model as exactly one of: `model` + `registered_model_name` (registers a "
            "new version), `registered_model_name` + `model_version`, or `model_uri`."
        )
    if registered_model_name and not model_name:
        model_name = registered_model_name.rsplit(".", 1)[-1]
    if deploy_decision and model is not None:
        assert registered_model_name is not None
        model_uri = deployer.register_model(model, registered_model_name, input_example)
    elif model_version is not None:
        assert registered_model_name is not None
        model_uri = model_uri_for(registered_model_name, model_version)
    settings: dict[str, Any] = {
        "workload_size": workload_size,
        "workload_type": workload_type,
        "scale_to_zero_enabled": scale_to_zero_enabled,
        "env": env or {},
        "tags": tags or {},
        "inference_table": inference_table,
        "query_format": query_format,
    }
    return deploy_with(
        deployer,
        model_uri=model_uri,
        deployment_name=deployment_name,
        model_name=model_name,
        deploy_decision=deploy_decision,
        policy=policy,
        timeout=timeout,
        settings=settings,
        smoke_input=smoke_input,
        canary_percent=canary_percent,
        rollout=rollout,
    )

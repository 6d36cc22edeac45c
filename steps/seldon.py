"""The typed deploy step of `zmd-seldon`."""

from __future__ import annotations

from typing import Annotated, Any

from zenml import step

from zenml_model_deployers.materializer import ServiceMaterializer
from zenml_model_deployers.service import DeploymentService

from ._body import deploy_with, given


@step(enable_cache=False, output_materializers=ServiceMaterializer)
def seldon_deployer_step(
    model: Any = None,
    model_uri: str | None = None,
    deployment_name: str | None = None,
    model_name: str = "",
    requirements: list[str] | None = None,
    replicas: int = 1,
    memory: str | None = None,
    server: str | None = None,
    parameters: dict[str, str] | None = None,
    storage_secret: str | None = None,
    seldon_api: str | None = None,
    implementation: str | None = None,
    image: str | None = None,
    protocol: str | None = None,
    deploy_decision: bool = True,
    policy: str = "update",
    timeout: float | None = None,
    smoke_input: Any = None,
    canary_percent: int | None = None,
    rollout: dict[str, Any] | None = None,
    input_example: Any = None,
) -> Annotated[DeploymentService, "seldon_deployment"]:
    """Deploys a model to Seldon Core on Kubernetes (flavor `zmd-seldon`).

    A model object is saved in its library's MLServer runtime format (scikit-learn:
    `model.joblib`, XGBoost: `model.json`, LightGBM: `model.bst`; PyTorch and pyfunc: an MLflow
    model), with the `model-settings.json` Seldon Core 2 loads it by, and uploaded to the artifact store
    (content-addressed: the same model is the same revision). A later run with another model
    or settings patches the same Seldon `Model`: same name, same URL; the old version serves
    until the new one is loaded, and one Seldon cannot load is rolled back.

    Args:
        model: a trained model object (scikit-learn, XGBoost, LightGBM, PyTorch, pyfunc), or
            None with `model_uri`.
        model_uri: a storage URI the cluster's servers read (folder with `model.joblib`, ...).
        deployment_name: stable name: the `Model`'s name (default: derived from the model name).
        model_name: the model's name (default: the deployment or pipeline name).
        requirements: capabilities a server needs (default: a model object's format, e.g.
            ["xgboost"], else ["sklearn"]).
        replicas: replicas of the model.
        memory: memory the model needs, e.g. "100Ki".
        server: the Seldon `Server` to load it on (default: the component's, else Seldon picks).
        parameters: model parameters (name -> value).
        storage_secret: a ZenML secret's name whose keys become the Kubernetes Secret the server
            reads storage with (default: the component's).
        seldon_api: "v2" (Core 2, default: the component's) or "v1" (Core 1).
        implementation: Core 1: the prepackaged server (default "SKLEARN_SERVER").
        image: Core 1: a custom model server image instead of a prepackaged server.
        protocol: Core 1: "seldon" (default) or "v2".
        deploy_decision: False keeps what serves now.
        policy: update (default), replace, side_by_side or fail.
        timeout: seconds to wait until it serves (default: the component's).
        smoke_input: an input that must predict before the revision counts as ready.
        canary_percent: 1-99: keep the serving revision and send this share of requests to the
            new one, until `zmd models promote|rollback`.
        rollout: with policy "canary": steps and gates (CanaryRollout's fields: steps,
            interval, max_error_rate, max_p95_ratio, min_requests).
        input_example: a few input rows, stored with an MLflow model (its signature).

    Returns:
        The service (saved in full as an artifact; no credentials in it).
    """
    settings: dict[str, Any] = {
        "replicas": replicas,
        "memory": memory,
        "server": server,
        "parameters": parameters or {},
        "storage_secret": storage_secret,
        **given(
            requirements=requirements,
            seldon_api=seldon_api,
            implementation=implementation,
            image=image,
            protocol=protocol,
        ),
    }
    return deploy_with(
        "zmd-seldon",
        model=model,
        model_uri=model_uri,
        input_example=input_example,
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

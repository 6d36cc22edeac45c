"""The typed deploy step of `zmd-kserve`."""

from __future__ import annotations

from typing import Annotated, Any

from zenml import step

from zenml_model_deployers.materializer import ServiceMaterializer
from zenml_model_deployers.service import DeploymentService

from ._body import deploy_with, given


@step(enable_cache=False, output_materializers=ServiceMaterializer)
def kserve_deployer_step(
    model: Any = None,
    model_uri: str | None = None,
    deployment_name: str | None = None,
    model_name: str = "",
    model_format: str | None = None,
    runtime: str | None = None,
    protocol: str = "v1",
    min_replicas: int | None = 1,
    max_replicas: int | None = None,
    resources: dict[str, dict[str, str]] | None = None,
    args: list[str] | None = None,
    storage_secret: str | None = None,
    deployment_mode: str | None = None,
    deploy_decision: bool = True,
    policy: str = "update",
    timeout: float | None = None,
    smoke_input: Any = None,
    canary_percent: int | None = None,
    rollout: dict[str, Any] | None = None,
    input_example: Any = None,
) -> Annotated[DeploymentService, "kserve_deployment"]:
    """Deploys a model as a KServe `InferenceService` on Kubernetes (flavor `zmd-kserve`).

    A model object is packaged in its own runtime's format (scikit-learn: `model.joblib`,
    XGBoost: `model.json`, LightGBM: `model.bst`; PyTorch and pyfunc: an MLflow model), or in
    `model_format`'s when given, and uploaded to the artifact store (content-addressed: the same model is the same
    revision). A later run with another model patches the same InferenceService: same name,
    same URL; KServe rolls it, and a revision that fails is rolled back to the previous spec.

    Args:
        model: a trained model object (scikit-learn, XGBoost, LightGBM, PyTorch, pyfunc), or
            None with `model_uri`.
        model_uri: a storage URI the cluster reads (`gs://`, `s3://`, `pvc://`, ...); for
            model_format="huggingface" a Hub id (`org/name`).
        deployment_name: stable name: the InferenceService's (default: from the model name).
        model_name: the model's name (default: the deployment or pipeline name).
        model_format: sklearn, mlflow, xgboost, lightgbm, tensorflow, pytorch, onnx, or
            huggingface (KServe's Hugging Face server, vLLM backend, OpenAI routes); default:
            a model object's own format (see `model`), else sklearn.
        runtime: a ServingRuntime to use (default: KServe picks one for the format).
        protocol: "v1" (`/v1/models/{name}:predict`) or "v2" (Open Inference Protocol).
        min_replicas: the predictor's minimum replicas (0: scale to zero in Serverless).
        max_replicas: its maximum replicas.
        resources: the model container's requests/limits, e.g. {"limits": {"cpu": "1"}}.
        args: extra model server arguments.
        storage_secret: a ZenML secret's name whose keys become the Kubernetes Secret (and
            ServiceAccount) the storage initializer reads the model with.
        deployment_mode: Serverless, Standard or RawDeployment (default: the component's,
            else the cluster's).
        deploy_decision: False keeps what serves now.
        policy: update (default), replace, side_by_side or fail.
        timeout: seconds to wait until it serves (default: the component's).
        smoke_input: an input that must predict before the revision counts as ready.
        canary_percent: 1-99: keep the serving revision and send this share of requests to the
            new one (Serverless: canaryTrafficPercent; Standard: spec.canary), until
            `zmd models promote|rollback`.
        rollout: with policy "canary": steps and gates (CanaryRollout's fields: steps,
            interval, max_error_rate, max_p95_ratio, min_requests); Serverless mode only
            (Knative's queue-proxy metrics, read from the component's `prometheus_url`).
        input_example: a few input rows, stored with an MLflow model (its signature).

    Returns:
        The service (saved in full as an artifact; no credentials in it).
    """
    settings: dict[str, Any] = {
        "protocol": protocol,
        "min_replicas": min_replicas,
        "max_replicas": max_replicas,
        "resources": resources or {},
        "args": args or [],
        "storage_secret": storage_secret,
        "deployment_mode": deployment_mode,
        **given(runtime=runtime, model_format=model_format),
    }
    return deploy_with(
        "zmd-kserve",
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

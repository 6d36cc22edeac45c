"""Deploy steps: one flavor-agnostic step and one typed step per flavor."""

from __future__ import annotations

from typing import Annotated, Any

from zenml import step
from zenml.client import Client

from zenml_model_deployers.materializer import ServiceMaterializer
from zenml_model_deployers.service import DeploymentService

from ._body import deploy_with, given


@step(enable_cache=False, output_materializers=ServiceMaterializer)
def model_deployer_step(
    model: Any = None,
    model_uri: str | None = None,
    deployment_name: str | None = None,
    model_name: str = "",
    deploy_decision: bool = True,
    policy: str = "update",
    timeout: float | None = None,
    settings: dict[str, Any] | None = None,
    canary_percent: int | None = None,
    rollout: dict[str, Any] | None = None,
    input_example: Any = None,
) -> Annotated[DeploymentService, "deployment"]:
    """Deploys the model with the active stack's model deployer, whatever its flavor.

    One pipeline goes from local MLflow to a remote backend by switching stacks.

    Args:
        model: the trained model (packaged by the flavor), or None with `model_uri`.
        model_uri: a model reference the backend understands.
        deployment_name: stable name (default: derived from the model name).
        model_name: the model's name (default: the deployment or pipeline name).
        deploy_decision: False keeps what serves now.
        policy: update (default), replace, side_by_side or fail.
        timeout: seconds to wait until it serves.
        settings: flavor-specific serving settings.
        canary_percent: 1-99: keep the serving revision and send this share of requests to
            the new one (flavors that split traffic); `zmd models promote|rollback` finish it.
        rollout: with policy "canary": steps and gates (CanaryRollout's fields: steps,
            interval, max_error_rate, max_p95_ratio, min_requests).
        input_example: a few rows of input stored with a packaged `model` (its signature:
            the request's column names and types; see docs/models.md).

    Returns:
        The service (saved in full as an artifact).
    """
    from zenml_model_deployers.deployer import BaseDeployer
    from zenml_model_deployers.errors import DeploymentError

    deployer = Client().active_stack.model_deployer
    if not isinstance(deployer, BaseDeployer):
        raise DeploymentError(
            "The active stack has no zenml-model-deployers model deployer.",
            hint="`zmd flavors register`, then `zenml model-deployer register local "
            "--flavor=zmd-mlflow` and `zenml stack update -d local`.",
        )
    return deploy_with(
        deployer,
        model=model,
        model_uri=model_uri,
        deployment_name=deployment_name,
        model_name=model_name,
        deploy_decision=deploy_decision,
        policy=policy,
        timeout=timeout,
        settings=settings,
        canary_percent=canary_percent,
        rollout=rollout,
        input_example=input_example,
    )


@step(enable_cache=False, output_materializers=ServiceMaterializer)
def mlflow_deployer_step(
    model: Any = None,
    model_uri: str | None = None,
    deployment_name: str | None = None,
    model_name: str = "",
    deploy_decision: bool = True,
    policy: str = "update",
    timeout: float | None = None,
    port: int | None = None,
    workers: int = 1,
    env: dict[str, str] | None = None,
    api_key: str | None = None,
    smoke_input: Any = None,
    input_example: Any = None,
    canary_percent: int | None = None,
    rollout: dict[str, Any] | None = None,
) -> Annotated[DeploymentService, "mlflow_deployment"]:
    """Deploys a model to a local MLflow server behind a stable URL (flavor `zmd-mlflow`).

    Needs no MLflow experiment tracker: a model object is saved as an MLflow model here.

    Args:
        model: a model object (docs/models.md: scikit-learn, XGBoost, LightGBM, PyTorch,
            transformers pipelines, mlflow.pyfunc.PythonModel), or None with `model_uri`.
        model_uri: any MLflow model URI (`runs:/`, `models:/`, local path).
        deployment_name: stable name (default: derived from the model name).
        model_name: the model's name.
        deploy_decision: False keeps what serves now.
        policy: update (default), replace, side_by_side or fail.
        timeout: seconds to wait until it serves.
        port: pin the public port (default: a free one, kept across updates).
        workers: server workers.
        env: server environment; values may be `{{secret.key}}` references.
        api_key: a `{{secret.key}}` reference to the key every request to the URL must
            carry as `Authorization: Bearer <key>` (None: no key).
        smoke_input: example input that must predict before the revision counts as ready.
        input_example: example input saved with the model (gives it a signature).
        canary_percent: 1-99: keep the serving revision and send this share of requests to
            the new one (the relay splits them); `zmd models promote|rollback` finish it.
        rollout: with policy "canary": steps and gates (CanaryRollout's fields: steps,
            interval, max_error_rate, max_p95_ratio, min_requests).

    Returns:
        The service (saved in full as an artifact).
    """
    settings = {"port": port, "workers": workers, "env": env or {}, **given(api_key=api_key)}
    return deploy_with(
        "zmd-mlflow",
        model=model,
        model_uri=model_uri,
        deployment_name=deployment_name,
        model_name=model_name,
        deploy_decision=deploy_decision,
        policy=policy,
        timeout=timeout,
        input_example=input_example,
        settings=settings,
        smoke_input=smoke_input,
        canary_percent=canary_percent,
        rollout=rollout,
    )


@step(enable_cache=False, output_materializers=ServiceMaterializer)
def huggingface_deployer_step(
    repository: str,
    revision: str | None = None,
    task: str | None = None,
    framework: str = "pytorch",
    accelerator: str = "cpu",
    instance_size: str = "x2",
    instance_type: str = "intel-icl",
    region: str = "us-east-1",
    vendor: str = "aws",
    min_replica: int = 1,
    max_replica: int = 1,
    scale_to_zero_timeout: int | None = None,
    endpoint_type: str = "authenticated",
    custom_image: dict[str, Any] | None = None,
    deployment_name: str | None = None,
    model_name: str = "",
    deploy_decision: bool = True,
    policy: str = "update",
    timeout: float | None = None,
    env: dict[str, str] | None = None,
    smoke_input: Any = None,
) -> Annotated[DeploymentService, "huggingface_deployment"]:
    """Deploys a Hub model to a Hugging Face Inference Endpoint (flavor `zmd-huggingface`).

    A later run with another revision (or settings) updates the same endpoint in place: same
    URL, the old revision serves until the new one runs, and a failed update is rolled back.

    Args:
        repository: the Hub repository, e.g. "distilbert/distilbert-base-uncased-finetuned-sst-2-english".
        revision: the revision to serve (pin a commit sha).
        task: e.g. "text-classification"; also what `service.predict` calls.
        framework: e.g. "pytorch" or "custom".
        accelerator: e.g. "cpu" or "gpu".
        instance_size: e.g. "x2".
        instance_type: e.g. "intel-icl" or "nvidia-a10g".
        region: e.g. "us-east-1" (fixed once created).
        vendor: e.g. "aws" (fixed once created).
        min_replica: replicas kept running; 0 allows scale-to-zero.
        max_replica: replicas at most.
        scale_to_zero_timeout: idle minutes before scaling to zero (with min_replica=0).
        endpoint_type: "public", "authenticated" or "private" (fixed once created).
        custom_image: a container image dict (huggingface_hub's `custom_image`).
        deployment_name: stable name (default: derived from the model name).
        model_name: the model's name (default: the deployment or pipeline name).
        deploy_decision: False keeps what serves now.
        policy: update (default), replace, side_by_side or fail.
        timeout: seconds to wait until the endpoint runs (default: the component's).
        env: the container's environment; `{{secret.key}}` values are sent as endpoint secrets.
        smoke_input: an input that must predict before the revision counts as ready.

    Returns:
        The service (saved in full as an artifact; no token in it).
    """
    settings: dict[str, Any] = {
        "revision": revision,
        "task": task,
        "framework": framework,
        "accelerator": accelerator,
        "instance_size": instance_size,
        "instance_type": instance_type,
        "region": region,
        "vendor": vendor,
        "min_replica": min_replica,
        "max_replica": max_replica,
        "scale_to_zero_timeout": scale_to_zero_timeout,
        "endpoint_type": endpoint_type,
        "custom_image": custom_image,
        "env": env or {},
    }
    return deploy_with(
        "zmd-huggingface",
        model_uri=repository,
        deployment_name=deployment_name,
        model_name=model_name,
        deploy_decision=deploy_decision,
        policy=policy,
        timeout=timeout,
        settings=settings,
        smoke_input=smoke_input,
    )


@step(enable_cache=False, output_materializers=ServiceMaterializer)
def recreate_deployment_step(
    service: DeploymentService,
    timeout: float | None = None,
) -> Annotated[DeploymentService, "deployment"]:
    """Deploys again, from a past run's service artifact, the exact serving conditions it recorded.

    Args:
        service: a service artifact (live or detached).
        timeout: seconds to wait until it serves.

    Returns:
        The serving service.
    """
    from zenml_model_deployers.recreate import recreate

    from ._body import record_metadata

    svc = recreate(service, timeout=timeout)
    record_metadata(svc)
    return svc

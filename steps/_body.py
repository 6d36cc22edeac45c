"""The one body every deploy step shares: deploy, record metadata, return the service."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from zenml import get_step_context, log_metadata
from zenml.logger import get_logger
from zenml.metadata.metadata_types import Uri

from zenml_model_deployers.deployer import BaseDeployer
from zenml_model_deployers.errors import DeploymentError
from zenml_model_deployers.service import DeploymentService

logger = get_logger(__name__)


def _provenance() -> dict[str, Any]:
    try:
        ctx = get_step_context()
    except Exception:
        return {}
    out: dict[str, Any] = {
        "pipeline_name": ctx.pipeline.name,
        "pipeline_step_name": ctx.step_name,
        "run_name": ctx.pipeline_run.name,
        "pipeline_run_id": str(ctx.pipeline_run.id),
    }
    return out


def _model_version_id() -> UUID | None:
    try:
        mv = get_step_context().model_version
    except Exception:
        return None
    return mv.id if mv is not None else None


def record_metadata(service: DeploymentService) -> None:
    """Records `deployed_model_url` and `deployment` on the running step.

    Args:
        service: the deployed (or kept) service.
    """
    md: dict[str, Any] = {"deployment": service.describe()}
    if service.prediction_url:
        md["deployed_model_url"] = Uri(service.prediction_url)
    log_metadata(metadata=md)


def record_rollout(record: Any) -> None:
    """Records a progressive rollout on the running step: run metadata `rollout` (steps,
    split, gate values per step, verdict) and an HTML view for the dashboard (an artifact
    named `<deployment>_rollout`: traffic share, error rate and p95 per revision and step).

    Args:
        record: the rollout (``rollout.RolloutRecord``).
    """
    from zenml import save_artifact
    from zenml.types import HTMLString

    from zenml_model_deployers.rollout import render_html

    log_metadata(metadata={"rollout": record.metadata()})
    save_artifact(HTMLString(render_html(record)), name=f"{record.deployment}_rollout")


def given(**values: Any) -> dict[str, Any]:
    """The optional settings a step was given: None means the flavor's default, so it is not
    sent (a config field left unset, not set to None).

    Args:
        **values: setting -> value.

    Returns:
        The ones that are not None.
    """
    return {k: v for k, v in values.items() if v is not None}


def deploy_with(
    deployer: BaseDeployer | str,
    *,
    model: Any = None,
    model_uri: str | None = None,
    deployment_name: str | None = None,
    model_name: str = "",
    deploy_decision: bool = True,
    policy: str = "update",
    timeout: float | None = None,
    input_example: Any = None,
    settings: dict[str, Any] | None = None,
    smoke_input: Any = None,
    canary_percent: int | None = None,
    rollout: dict[str, Any] | None = None,
) -> DeploymentService:
    """Deploys (or, with `deploy_decision=False`, keeps) a model; records metadata.

    Args:
        deployer: the model deployer to use, or its flavor's name (e.g. "zmd-kserve").
        model: a trained model object (the flavor packages it).
        model_uri: or a model reference the backend understands.
        deployment_name: stable deployment name (default: from model_name).
        model_name: the model's name.
        deploy_decision: False keeps whatever serves now (continuous deployment gates).
        policy: update, replace, side_by_side or fail.
        timeout: seconds to wait for readiness.
        input_example: example input (packaging signature).
        settings: flavor-specific serving settings.
        smoke_input: an input that must predict before the revision counts as ready (None:
            no smoke test).
        canary_percent: 1-99: keep the serving revision and send this share of requests to
            the new one, until `zmd models promote|rollback` finishes the canary.
        rollout: with policy "canary": its steps and gates (``CanaryRollout`` fields:
            steps, interval, max_error_rate, max_p95_ratio, min_requests).

    Returns:
        The service.
    """
    from zenml_model_deployers.config import derive_deployment_name

    if isinstance(deployer, str):
        from zenml_model_deployers.flavors import get_deployer

        deployer = get_deployer(deployer)
    settings = {**(settings or {}), **given(smoke_input=smoke_input)}
    prov = _provenance()
    model_name = model_name or deployment_name or prov.get("pipeline_name", "model")
    if not deploy_decision:
        name = deployment_name or derive_deployment_name(model_name)
        existing = deployer.find_deployment(name)
        if existing is None:
            raise DeploymentError(
                f"deploy_decision is False and deployment '{name}' does not exist yet: "
                "nothing to keep serving.",
                deployment_name=name,
                hint="run once with deploy_decision=True.",
            )
        logger.info("deploy_decision is False: keeping deployment '%s' as it is.", name)
        if existing.status.state != "active":
            existing = deployer.start(existing, timeout)
        record_metadata(existing)
        return existing
    config = deployer.build_config(
        model=model,
        model_uri=model_uri,
        deployment_name=deployment_name,
        model_name=model_name,
        input_example=input_example,
        **settings,
        **prov,
    )
    try:
        service = deployer.deploy(
            config,
            policy=policy,
            timeout=timeout,
            model_version_id=_model_version_id(),
            canary_percent=canary_percent,
            rollout=rollout,
        )
    except DeploymentError as e:
        # A rollout that was rolled back is recorded too: the step fails with its numbers.
        if getattr(e, "rollout", None) is not None:
            record_rollout(e.rollout)  # type: ignore[attr-defined]
        raise
    if service.last_rollout is not None:
        record_rollout(service.last_rollout)
    record_metadata(service)
    logger.info("Deployed model URL: %s", service.prediction_url)
    return service

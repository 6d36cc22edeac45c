"""Recreate a deployment from a recorded service (artifact), live or detached."""

from __future__ import annotations

from zenml_model_deployers.config import DeployPolicy
from zenml_model_deployers.service import DeploymentService


def recreate(service: DeploymentService, timeout: float | None = None) -> DeploymentService:
    """Deploys the service's recorded config again under its deployment name.

    Same config hash as recorded: if that revision still serves, nothing restarts; if it is
    stopped, it starts; if another revision serves, it is rolled back to the recorded one
    (an update: the URL keeps serving); if the deployment is gone, it is created again, on the
    recorded URL's port when that port is free.

    Args:
        service: the recorded service.
        timeout: seconds to wait until it serves.

    Returns:
        The serving service.
    """
    from zenml_model_deployers.flavors import get_deployer

    recorded = service.recorded
    deployer = get_deployer(recorded.FLAVOR)
    config = type(recorded.config).model_validate(recorded.config.model_dump())
    return deployer.deploy(config, policy=DeployPolicy.UPDATE, timeout=timeout, seed=recorded)


def load_run_service(run: str, step: str | None = None) -> DeploymentService:
    """Loads the service artifact a pipeline run's deploy step saved.

    Args:
        run: run name, id or id prefix.
        step: the step's name (default: the only step that output a service).

    Returns:
        The service (live, or detached if its row is gone).

    Raises:
        DeploymentNotFoundError: no such run, step, or service artifact.
    """
    from zenml.client import Client

    from zenml_model_deployers.errors import DeploymentNotFoundError

    try:
        pr = Client().get_pipeline_run(run)
    except KeyError as e:
        raise DeploymentNotFoundError(f"No pipeline run '{run}'.") from e
    candidates = []
    for name, s in pr.steps.items():
        if step and name != step:
            continue
        for outs in s.outputs.values():
            for art in outs if isinstance(outs, list) else [outs]:
                if art.type == "ServiceArtifact" or str(art.type).endswith("SERVICE"):
                    candidates.append((name, art))
    if not candidates:
        where = f"step '{step}' of run '{run}'" if step else f"run '{run}'"
        raise DeploymentNotFoundError(
            f"No service artifact in {where}.",
            hint="name the deploy step with --step (see `zenml pipeline runs list`).",
        )
    if len(candidates) > 1 and not step:
        names = ", ".join(sorted({n for n, _ in candidates}))
        raise DeploymentNotFoundError(
            f"Run '{run}' has several deploy steps ({names}).", hint="choose one with --step."
        )
    loaded = candidates[0][1].load()
    if not isinstance(loaded, DeploymentService):
        raise DeploymentNotFoundError(
            f"The service artifact of run '{run}' is not a zenml-model-deployers service."
        )
    return loaded

"""The Seldon resources of a deployment, as manifests (plain dicts sent by the kubernetes client).

Field names are the CRDs' (``../shared/crds`` in the tests validates every manifest).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zenml_model_deployers.kube.resources import ResourceKind

if TYPE_CHECKING:
    from zenml_model_deployers.flavors.seldon.service import SeldonDeploymentConfig

MODEL = ResourceKind(
    group="mlops.seldon.io",
    version="v1alpha1",
    plural="models",
    kind="Model",
    product="Seldon Core 2",
)
EXPERIMENT = ResourceKind(
    group="mlops.seldon.io",
    version="v1alpha1",
    plural="experiments",
    kind="Experiment",
    product="Seldon Core 2",
)


def secret_name(deployment_name: str) -> str:
    """The Kubernetes Secret holding a deployment's storage credentials.

    Args:
        deployment_name: the deployment.

    Returns:
        Its name.
    """
    return f"{deployment_name}-storage"


def model_spec(config: SeldonDeploymentConfig) -> dict[str, Any]:
    """A Core 2 ``Model``'s spec for a revision.

    Args:
        config: the revision.

    Returns:
        The spec (only the fields the config sets).
    """
    spec: dict[str, Any] = {
        "storageUri": config.model_uri,
        "requirements": list(config.requirements),
        "replicas": config.replicas,
    }
    if config.server:
        spec["server"] = config.server
    if config.memory:
        spec["memory"] = config.memory
    if config.parameters:
        spec["parameters"] = [{"name": k, "value": v} for k, v in sorted(config.parameters.items())]
    if config.storage_secret:
        spec["secretName"] = secret_name(config.deployment_name)
    return spec


def model_manifest(
    name: str,
    namespace: str,
    config: SeldonDeploymentConfig,
    labels: dict[str, str],
    annotations: dict[str, str],
) -> dict[str, Any]:
    """A complete Core 2 ``Model``.

    Args:
        name: the object's name.
        namespace: its namespace.
        config: the revision it serves.
        labels: ownership labels.
        annotations: the config annotation.

    Returns:
        The manifest.
    """
    return {
        "apiVersion": MODEL.api_version,
        "kind": MODEL.kind,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": model_spec(config),
    }


def merge_patch_for(
    new: dict[str, Any], old: dict[str, Any] | None, metadata: dict[str, Any]
) -> dict[str, Any]:
    """A merge patch from the spec we sent before to the new one (fields we dropped -> null).

    Fields the controller or others set stay untouched: only ours are removed.

    Args:
        new: the new spec.
        old: the spec we sent last (None: unknown).
        metadata: labels/annotations to set.

    Returns:
        The patch.
    """
    spec: dict[str, Any] = dict(new)
    for key in old or {}:
        if key not in new:
            spec[key] = None
    return {"metadata": metadata, "spec": spec}

"""The Seldon resources of a deployment, as manifests (plain dicts sent by the kubernetes client).

Field names are the CRDs' (``testing/crds/`` in the tests validates every manifest).
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


# The Model spec fields this flavor sets (a merge patch may null only these).
MODEL_FIELDS = (
    "storageUri",
    "requirements",
    "replicas",
    "server",
    "memory",
    "parameters",
    "secretName",
)


def candidate_name(deployment_name: str, config_hash: str) -> str:
    """The canary candidate's ``Model`` name: the deployment name and the candidate's revision.

    Args:
        deployment_name: the deployment (up to 63 characters).
        config_hash: the candidate's config hash.

    Returns:
        A DNS label of at most 63 characters.
    """
    return f"{deployment_name[:51].rstrip('-')}-c{config_hash[:10]}"


def experiment_spec(model: str, candidate: str, percent: int) -> dict[str, Any]:
    """A Core 2 ``Experiment`` splitting requests to ``model`` with a candidate.

    ``default`` makes requests sent to the model itself (``Seldon-Model: <model>``) follow the
    split, so the deployment's URL and header stay the same during a canary.

    Args:
        model: the main Model's name.
        candidate: the candidate Model's name.
        percent: the candidate's share, 1-99.

    Returns:
        The spec.
    """
    return {
        "default": model,
        "resourceType": "model",
        "candidates": [
            {"name": model, "weight": 100 - percent},
            {"name": candidate, "weight": percent},
        ],
    }


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


# ----------------------------------------------------------------- Seldon Core 1
SELDON_DEPLOYMENT = ResourceKind(
    group="machinelearning.seldon.io",
    version="v1",
    plural="seldondeployments",
    kind="SeldonDeployment",
    product="Seldon Core 1",
)
PREPACKAGED_SERVERS = (
    "SKLEARN_SERVER",
    "MLFLOW_SERVER",
    "XGBOOST_SERVER",
    "TENSORFLOW_SERVER",
    "TRITON_SERVER",
)
PROTOCOLS = ("seldon", "v2")
GRAPH_NAME = "classifier"


def predictor(
    name: str, config: SeldonDeploymentConfig, replicas: int, traffic: int | None
) -> dict[str, Any]:
    """A Core 1 predictor serving one revision: a prepackaged server or a custom image.

    Args:
        name: the predictor's name (``default`` or ``canary``).
        config: the revision.
        replicas: its replicas (0 while stopped).
        traffic: its share (only with two predictors).

    Returns:
        The predictor.
    """
    graph: dict[str, Any] = {"name": GRAPH_NAME, "type": "MODEL", "children": []}
    if config.image:
        graph["modelUri"] = config.model_uri
    else:
        graph["implementation"] = config.implementation
        graph["modelUri"] = config.model_uri
    if config.storage_secret:
        graph["envSecretRefName"] = secret_name(config.deployment_name)
    if config.parameters:
        graph["parameters"] = [
            {"name": k, "type": "STRING", "value": v} for k, v in sorted(config.parameters.items())
        ]
    out: dict[str, Any] = {"name": name, "replicas": replicas, "graph": graph}
    if config.image:
        out["componentSpecs"] = [
            {"spec": {"containers": [{"name": GRAPH_NAME, "image": config.image}]}}
        ]
    if traffic is not None:
        out["traffic"] = traffic
    return out


def seldon_deployment_spec(
    name: str,
    stable: SeldonDeploymentConfig,
    candidate: SeldonDeploymentConfig | None,
    candidate_percent: int,
    stopped: bool = False,
) -> dict[str, Any]:
    """A Core 1 ``SeldonDeployment``'s spec: one predictor, or two with ``traffic`` for a canary.

    Args:
        name: the deployment name.
        stable: the stable revision.
        candidate: the canary's candidate (None: none).
        candidate_percent: its share.
        stopped: replicas 0 (``stop``; ``start`` restores the configured replicas).

    Returns:
        The spec.
    """

    def reps(c: SeldonDeploymentConfig) -> int:
        return 0 if stopped else c.replicas

    if candidate is None or not candidate_percent:
        predictors = [predictor("default", stable, reps(stable), None)]
    else:
        predictors = [
            predictor("default", stable, reps(stable), 100 - candidate_percent),
            predictor("canary", candidate, reps(candidate), candidate_percent),
        ]
    return {"name": name, "protocol": stable.protocol, "predictors": predictors}

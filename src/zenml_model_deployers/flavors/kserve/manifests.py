"""The ``InferenceService`` of a deployment, as manifests (plain dicts sent by the kubernetes
client), and how KServe's status reads.

Field names are the CRD's (``testing/crds/serving.kserve.io_inferenceservices.yaml``; the
tests validate every manifest and every patch result against it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zenml_model_deployers.kube.resources import ResourceKind

if TYPE_CHECKING:
    from zenml_model_deployers.flavors.kserve.service import KServeDeploymentConfig

INFERENCE_SERVICE = ResourceKind(
    group="serving.kserve.io",
    version="v1beta1",
    plural="inferenceservices",
    kind="InferenceService",
    product="KServe",
)
# KServe's own annotations.
STOP_ANNOTATION = "serving.kserve.io/stop"
# The model container's name KServe gives the predictor (spec.canary's model requires one).
MODEL_CONTAINER = "kserve-container"
MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
MODEL_FORMATS = (
    "sklearn",
    "mlflow",
    "xgboost",
    "lightgbm",
    "tensorflow",
    "pytorch",
    "onnx",
    "huggingface",
)
PROTOCOLS = ("v1", "v2")
# The predictor fields this flavor sets (a merge patch may null only these).
PREDICTOR_FIELDS = (
    "model",
    "minReplicas",
    "maxReplicas",
    "serviceAccountName",
    "canaryTrafficPercent",
)


def secret_name(deployment_name: str) -> str:
    """The Kubernetes Secret holding a deployment's storage credentials.

    Args:
        deployment_name: the deployment.

    Returns:
        Its name.
    """
    return f"{deployment_name}-storage"


def service_account_name(deployment_name: str) -> str:
    """The ServiceAccount that carries the storage Secret (KServe's storage initializer reads
    credentials from the predictor's service account's secrets).

    Args:
        deployment_name: the deployment.

    Returns:
        Its name.
    """
    return f"{deployment_name}-storage"


def is_hub_id(reference: str) -> bool:
    """Whether a huggingface model reference is a Hub id (``org/name``), not a storage URI.

    Args:
        reference: the model reference.

    Returns:
        True for a Hub id.
    """
    return "://" not in reference and not reference.startswith("/")


def predictor_spec(config: KServeDeploymentConfig) -> dict[str, Any]:
    """The ``spec.predictor`` serving one revision.

    ``huggingface`` with a Hub id runs KServe's Hugging Face server on that id
    (``--model_id``, vLLM backend); any other reference is a ``storageUri`` the storage
    initializer downloads.

    Args:
        config: the revision.

    Returns:
        The predictor (only the fields the config sets).
    """
    model: dict[str, Any] = {"modelFormat": {"name": config.model_format}}
    args = [f"--model_name={config.deployment_name}"]
    if config.model_format == "huggingface" and is_hub_id(config.model_uri):
        args += [f"--model_id={config.model_uri}", "--backend=vllm"]
    else:
        model["storageUri"] = config.model_uri
    if config.model_format == "huggingface":
        model["args"] = args + list(config.args)
    elif config.args:
        model["args"] = list(config.args)
    if config.runtime:
        model["runtime"] = config.runtime
    model["protocolVersion"] = config.protocol
    if config.resources:
        model["resources"] = config.resources
    pred: dict[str, Any] = {"model": model}
    if config.min_replicas is not None:
        pred["minReplicas"] = config.min_replicas
    if config.max_replicas is not None:
        pred["maxReplicas"] = config.max_replicas
    if config.storage_secret:
        pred["serviceAccountName"] = service_account_name(config.deployment_name)
    return pred


def inference_service_manifest(
    name: str,
    namespace: str,
    spec: dict[str, Any],
    labels: dict[str, str],
    annotations: dict[str, str],
) -> dict[str, Any]:
    """A complete ``InferenceService``.

    Args:
        name: its name (the deployment's).
        namespace: its namespace.
        spec: its spec.
        labels: ownership labels.
        annotations: the config annotation (and the deployment mode).

    Returns:
        The manifest.
    """
    return {
        "apiVersion": INFERENCE_SERVICE.api_version,
        "kind": INFERENCE_SERVICE.kind,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": spec,
    }


def spec_patch(new: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """A merge patch of ``spec`` from what the object has to ``new``: the predictor's fields
    we set and dropped become null (fields others set stay), ``canary`` is set or removed.

    Args:
        new: the spec wanted.
        current: the object's spec now.

    Returns:
        The ``spec`` part of the patch.
    """
    pred: dict[str, Any] = {}
    cur_pred = current.get("predictor") or {}
    for key in PREDICTOR_FIELDS:
        if key in new["predictor"]:
            if key == "model":
                # The model is replaced whole: a merge patch would keep fields we dropped.
                old = cur_pred.get("model") or {}
                pred["model"] = {
                    **{k: None for k in old if k not in new["predictor"]["model"]},
                    **new["predictor"]["model"],
                }
            else:
                pred[key] = new["predictor"][key]
        elif key in cur_pred:
            pred[key] = None
    out: dict[str, Any] = {"predictor": pred}
    if "canary" in new:
        out["canary"] = new["canary"]
    elif "canary" in current:
        out["canary"] = None
    return out


# ----------------------------------------------------------------- status
def conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The object's conditions by type.

    Args:
        obj: the object.

    Returns:
        type -> condition.
    """
    return {str(c.get("type")): c for c in (obj.get("status") or {}).get("conditions") or [] if c}


def observed(obj: dict[str, Any]) -> bool:
    """Whether KServe has reconciled the object's latest spec (``observedGeneration``), as
    KServe's own SDK checks before it trusts ``Ready``.

    Args:
        obj: the object.

    Returns:
        True if its status describes its spec.
    """
    gen = (obj.get("metadata") or {}).get("generation")
    seen = (obj.get("status") or {}).get("observedGeneration")
    if gen is None:
        return True
    return seen is not None and int(seen) >= int(gen)


def failure(obj: dict[str, Any]) -> str:
    """KServe's words for a failed rollout of the current spec ("" if none): a False
    ``Ready``/``PredictorReady`` with a failure reason, or the model status's last failure.

    Args:
        obj: the object.

    Returns:
        The message.
    """
    status = obj.get("status") or {}
    model_status = status.get("modelStatus") or {}
    conds = conditions(obj)
    for t in ("PredictorReady", "Ready"):
        c = conds.get(t) or {}
        if c.get("status") == "False" and c.get("reason") in FAILED_REASONS:
            return f"{c.get('reason')}: {c.get('message') or ''}".strip(": ")
    if model_status.get("transitionStatus") in ("BlockedByFailedLoad", "InvalidSpec"):
        info = model_status.get("lastFailureInfo") or {}
        return f"{info.get('reason') or model_status['transitionStatus']}: {info.get('message') or ''}".strip(
            ": "
        )
    return ""


# Reasons of a False Ready that mean the rollout failed (Knative's and KServe's).
FAILED_REASONS = (
    "RevisionFailed",
    "RevisionMissing",
    "ModelLoadFailed",
    "InvalidPredictorSpec",
    "NoSupportingRuntime",
    "RuntimeNotRecognized",
    "RuntimeDisabled",
    "ProgressDeadlineExceeded",
)

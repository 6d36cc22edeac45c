"""KServe's ``InferenceService`` of a deployment: its spec for a revision (and a canary per
deployment mode), the writes that create or patch it, and how its status reads (ready, failed,
the traffic of its revisions).

Field names are the CRD's (``testing/crds/serving.kserve.io_inferenceservices.yaml``; the
tests validate every manifest and every patch result against it). ``kubernetes`` is imported
only by the calls (through ``kube.resources``).
"""

from __future__ import annotations

from typing import Any

from zenml_model_deployers.errors import DeploymentError
from zenml_model_deployers.flavors.kserve.config import KServeDeploymentConfig
from zenml_model_deployers.kube.objects import (
    LABEL_CONFIG_HASH,
    ResourceKind,
    Verdict,
    conditions,
    observed,
    patch_changes_nothing,
)
from zenml_model_deployers.kube.resources import KubeNamespace
from zenml_model_deployers.kube.secrets import storage_secret_name

INFERENCE_SERVICE = ResourceKind.of("serving.kserve.io/v1beta1", "InferenceService", "KServe")
# KServe's own annotations.
STOP_ANNOTATION = "serving.kserve.io/stop"
MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
# The model container's name KServe gives the predictor (spec.canary's model requires one).
MODEL_CONTAINER = "kserve-container"
# The predictor fields this flavor sets (a merge patch may null only these).
PREDICTOR_FIELDS = (
    "model",
    "minReplicas",
    "maxReplicas",
    "serviceAccountName",
    "canaryTrafficPercent",
)
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


def is_serverless(mode: str) -> bool:
    """Whether a deployment mode is KServe's Serverless (Knative revisions and traffic).

    Args:
        mode: the mode (``Standard`` for RawDeployment).

    Returns:
        True for Serverless.
    """
    return mode == "Serverless"


# ----------------------------------------------------------------- spec
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
        pred["serviceAccountName"] = storage_secret_name(config.deployment_name)
    return pred


def inference_service_spec(
    stable: KServeDeploymentConfig,
    candidate: KServeDeploymentConfig | None,
    percent: int,
    mode: str,
    canary_pin: bool = False,
) -> dict[str, Any]:
    """The InferenceService's spec for a revision, or for a canary in the way its deployment
    mode runs one: Serverless, the candidate's predictor with ``canaryTrafficPercent`` (KServe
    splits with the previous rolled-out revision); Standard, the stable predictor and the
    candidate in ``spec.canary`` (KServe >= 0.20; ``canaryTrafficPercent`` is ignored there,
    kserve#5335).

    Args:
        stable: the stable revision.
        candidate: the canary's candidate (None: none).
        percent: its share.
        mode: the deployment mode that applies (``Serverless`` or ``Standard``).
        canary_pin: Serverless, no candidate: the stable spec with ``canaryTrafficPercent: 0``
            (traffic stays on the previous rolled-out revision; the way out of a canary).

    Returns:
        The spec.
    """
    if candidate is None:
        pred = predictor_spec(stable)
        if canary_pin:
            pred["canaryTrafficPercent"] = 0
        return {"predictor": pred}
    if is_serverless(mode):
        pred = predictor_spec(candidate)
        pred["canaryTrafficPercent"] = percent
        return {"predictor": pred}
    canary = predictor_spec(candidate)
    # The CRD requires the container's name here (KServe's default for the predictor).
    canary["model"] = {"name": MODEL_CONTAINER, **canary["model"]}
    return {
        "predictor": predictor_spec(stable),
        "canary": [{"predictor": canary, "trafficPercent": percent}],
    }


def isvc_annotations(
    config: dict[str, str], mode: str | None, stopped: bool
) -> dict[str, str | None]:
    """The InferenceService's annotations: our config annotation, KServe's deployment mode
    (where the config sets one) and its stop annotation (None: removed).

    Args:
        config: the config annotation.
        mode: the config's deployment mode.
        stopped: stopped by ``stop``.

    Returns:
        The annotations, as a merge patch sets them.
    """
    out: dict[str, str | None] = dict(config)
    if mode:
        out[MODE_ANNOTATION] = mode
    out[STOP_ANNOTATION] = "true" if stopped else None
    return out


def stop_patch(stopped: bool) -> dict[str, Any]:
    """The merge patch that sets (or removes) KServe's stop annotation.

    Args:
        stopped: set it.

    Returns:
        The patch.
    """
    return {"metadata": {"annotations": {STOP_ANNOTATION: "true" if stopped else None}}}


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


# ----------------------------------------------------------------- writes
def write(
    ns: KubeNamespace,
    name: str,
    existing: dict[str, Any] | None,
    spec: dict[str, Any],
    labels: dict[str, str],
    annots: dict[str, str | None],
) -> None:
    """Creates the InferenceService, or patches what differs (nothing: no request).

    Args:
        ns: the deployment's namespace.
        name: its name.
        existing: the object now (None: create).
        spec: the spec wanted.
        labels: our ownership labels.
        annots: the annotations (:func:`isvc_annotations`).
    """
    if existing is None:
        present = {k: v for k, v in annots.items() if v is not None}
        ns.create(
            INFERENCE_SERVICE, INFERENCE_SERVICE.manifest(name, ns.namespace, spec, labels, present)
        )
        return
    current = existing.get("spec") or {}
    meta = existing.get("metadata") or {}
    patch_spec = spec_patch(spec, current)
    same_spec = patch_changes_nothing(current, patch_spec)
    same_meta = (meta.get("labels") or {}).get(LABEL_CONFIG_HASH) == labels[
        LABEL_CONFIG_HASH
    ] and all((meta.get("annotations") or {}).get(k) == v for k, v in annots.items())
    if same_spec and same_meta:
        return
    ns.merge_patch(
        INFERENCE_SERVICE,
        name,
        {"metadata": {"labels": labels, "annotations": annots}, "spec": patch_spec},
    )


def canary_refusal(ns: KubeNamespace, name: str, patch: dict[str, Any]) -> str:
    """Whether the API server keeps ``spec.canary`` (KServe >= 0.20's CRD): a server-side dry
    run of the patch; nothing is changed either way.

    Args:
        ns: the deployment's namespace.
        name: the InferenceService.
        patch: the merge patch carrying ``spec.canary``.

    Returns:
        "" when kept; else the server's words: a strict server refuses the unknown field
        (422), a lenient one prunes it.

    Raises:
        DeploymentError: the dry run failed for another reason.
    """
    kind = INFERENCE_SERVICE
    try:
        with ns.errors(f"Dry-running a canary on InferenceService '{name}'"):
            result = ns.custom().patch_namespaced_custom_object(
                kind.group, kind.version, ns.namespace, kind.plural, name, patch, dry_run="All"
            )
    except DeploymentError as e:
        words = str(e)
        if "'canary' was unexpected" in words or 'unknown field "spec.canary"' in words:
            return e.backend_message or words.splitlines()[0]
        raise
    if not (result.get("spec") or {}).get("canary"):
        return "the API server pruned spec.canary (unknown field)"
    return ""


# ----------------------------------------------------------------- status
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


def read_state(obj: dict[str, Any]) -> tuple[str, str, bool]:
    """The InferenceService's state in KServe's words.

    Args:
        obj: the object.

    Returns:
        (state: Stopped / Progressing / Failed / Ready, message, failed).
    """
    conds = conditions(obj)
    ready = conds.get("Ready") or {}
    words = f"{ready.get('reason') or ''}: {ready.get('message') or ''}".strip(": ")
    if (conds.get("Stopped") or {}).get("status") == "True":
        return "Stopped", "stopped (serving.kserve.io/stop)", False
    if not observed(obj, strict=True):
        return "Progressing", "KServe has not reconciled the spec yet", False
    if failed := failure(obj):
        return "Failed", failed, True
    if ready.get("status") == "True":
        return "Ready", "", False
    return "Progressing", words or "no status yet", False


def predictor_status(obj: dict[str, Any]) -> dict[str, Any]:
    """``status.components.predictor``: Serverless revisions and traffic.

    Args:
        obj: the object.

    Returns:
        It ({} when absent).
    """
    return ((obj.get("status") or {}).get("components") or {}).get("predictor") or {}


def traffic_as_wanted(obj: dict[str, Any], serverless: bool, percent: int, stable_rev: str) -> bool:
    """Whether KServe routes as a target wants: Standard, the ``spec.canary`` entries ready
    with the candidate's share (none without a canary); Serverless, the latest revision ready
    with the candidate's share and the stable revision the rest (100 % without a canary).

    Args:
        obj: the object.
        serverless: Serverless mode.
        percent: the candidate's share (0: no canary).
        stable_rev: Serverless: the revision serving the stable revision, as we recorded it
            ("": KServe's ``latestRolledoutRevision``).

    Returns:
        True when the traffic is as wanted.
    """
    if not serverless:
        canaries = (obj.get("status") or {}).get("canaryStatuses") or []
        if not percent:
            return not canaries
        return bool(
            canaries
            and all(c.get("ready") for c in canaries)
            and sum(int(c.get("trafficPercent") or 0) for c in canaries) == percent
        )
    pred = predictor_status(obj)
    latest = pred.get("latestReadyRevision")
    if not latest or latest != pred.get("latestCreatedRevision"):
        return False
    traffic = {
        str(t.get("revisionName")): int(t.get("percent") or 0)
        for t in pred.get("traffic") or []
        if int(t.get("percent") or 0) > 0
    }
    if not percent:
        return traffic == {latest: 100}
    stable = stable_rev or pred.get("latestRolledoutRevision")
    # 0 % entries are left out on both sides (a 100 % canary: the stable revision's route
    # entry, kept at 0 %, is no traffic).
    want = {latest: percent, str(stable): 100 - percent}
    return traffic == {r: p for r, p in want.items() if p > 0}


def pinned_verdict(obj: dict[str, Any] | None) -> Verdict:
    """Serverless rollback, step 1: whether KServe has the pinned spec's revision ready (its
    traffic 0 %, the previous rolled-out revision 100 %).

    Args:
        obj: the object (None: deleted).

    Returns:
        The verdict.
    """
    if obj is None:
        return Verdict(failed=True, reason="the InferenceService was deleted")
    if not observed(obj, strict=True):
        return Verdict(reason="KServe has not reconciled the pinned spec yet")
    failed = failure(obj)
    if failed:
        return Verdict(failed=True, reason=failed)
    pred = predictor_status(obj)
    ready = pred.get("latestReadyRevision") == pred.get("latestCreatedRevision")
    return Verdict(done=ready, reason="the stable spec's revision is not ready yet")


def stopped_verdict(obj: dict[str, Any] | None) -> Verdict:
    """Whether KServe reports the ``Stopped`` condition (or the object is gone).

    Args:
        obj: the object (None: deleted).

    Returns:
        The verdict.
    """
    if obj is None:
        return Verdict(done=True)
    stopped = conditions(obj).get("Stopped") or {}
    return Verdict(done=stopped.get("status") == "True", reason="stopping")

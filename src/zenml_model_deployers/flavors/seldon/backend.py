"""Seldon's objects and how they read: the manifests of a deployment's ``Model``s and
``Experiment`` (Core 2) or ``SeldonDeployment`` (Core 1), the writes that create or patch them,
and their status as ready / failed / progressing in Seldon's own words.

Field names are the CRDs' (``testing/crds/`` in the tests validates every manifest).
``kubernetes`` is imported only by the calls (through ``kube.resources``).
"""

from __future__ import annotations

from typing import Any

from zenml_model_deployers.flavors.seldon.config import SeldonDeploymentConfig
from zenml_model_deployers.kube.objects import (
    LABEL_CONFIG_HASH,
    ResourceKind,
    Verdict,
    conditions,
    observed,
)
from zenml_model_deployers.kube.resources import KubeNamespace
from zenml_model_deployers.kube.secrets import storage_secret_name

MODEL = ResourceKind.of("mlops.seldon.io/v1alpha1", "Model", "Seldon Core 2")
EXPERIMENT = ResourceKind.of("mlops.seldon.io/v1alpha1", "Experiment", "Seldon Core 2")
SELDON_DEPLOYMENT = ResourceKind.of(
    "machinelearning.seldon.io/v1", "SeldonDeployment", "Seldon Core 1"
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
# Core 1: the name of the graph's one node (the model), part of the V2 path.
GRAPH_NAME = "classifier"
# Model conditions whose False status with these reasons means the load failed for good.
FAILED_REASONS = ("ModelFailed", "LoadFailed", "ScheduleFailed", "ModelFailedToLoad")


# ----------------------------------------------------------------- Core 2 manifests
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
        spec["secretName"] = storage_secret_name(config.deployment_name)
    return spec


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


# ----------------------------------------------------------------- Core 1 manifests
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
        graph["envSecretRefName"] = storage_secret_name(config.deployment_name)
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


# ----------------------------------------------------------------- writes
def ensure_model(
    ns: KubeNamespace,
    name: str,
    cfg: SeldonDeploymentConfig,
    labels: dict[str, str],
    annotations: dict[str, str],
) -> None:
    """Creates a ``Model``, or patches it when its spec or revision labels differ (nothing
    differs: no request).

    Args:
        ns: the deployment's namespace.
        name: the Model's name.
        cfg: the revision it serves.
        labels: our ownership labels.
        annotations: the config annotation.
    """
    spec = model_spec(cfg)
    existing = ns.get_owned(MODEL, name)
    if existing is None:
        ns.create(MODEL, MODEL.manifest(name, ns.namespace, spec, labels, annotations))
        return
    current = existing.get("spec") or {}
    meta_labels = (existing.get("metadata") or {}).get("labels") or {}
    same_spec = all(current.get(k) == v for k, v in spec.items()) and not any(
        k in current for k in MODEL_FIELDS if k not in spec
    )
    if same_spec and meta_labels.get(LABEL_CONFIG_HASH) == cfg.config_hash():
        return
    ns.merge_patch(
        MODEL,
        name,
        merge_patch_for(
            spec,
            {k: v for k, v in current.items() if k in MODEL_FIELDS},
            {"labels": labels, "annotations": annotations},
        ),
    )


def ensure_experiment(
    ns: KubeNamespace, name: str, candidate: str, percent: int, labels: dict[str, str]
) -> None:
    """Creates or patches the ``Experiment`` that splits a model's traffic with a candidate.

    Args:
        ns: the deployment's namespace.
        name: the main Model's name (the Experiment's too).
        candidate: the candidate Model's name.
        percent: the candidate's share.
        labels: our ownership labels.
    """
    spec = experiment_spec(name, candidate, percent)
    existing = ns.get_owned(EXPERIMENT, name)
    if existing is None:
        ns.create(EXPERIMENT, EXPERIMENT.manifest(name, ns.namespace, spec, labels))
    elif existing.get("spec") != spec:
        ns.merge_patch(EXPERIMENT, name, {"spec": spec, "metadata": {"labels": labels}})


def ensure_seldon_deployment(
    ns: KubeNamespace,
    name: str,
    spec: dict[str, Any],
    config_hash: str,
    labels: dict[str, str],
    annotations: dict[str, str],
) -> None:
    """Creates a Core 1 ``SeldonDeployment``, or merge-patches it when its spec or revision
    differs.

    Args:
        ns: the deployment's namespace.
        name: its name.
        spec: its spec.
        config_hash: the stable revision's hash.
        labels: our ownership labels.
        annotations: the config annotation.
    """
    existing = ns.get_owned(SELDON_DEPLOYMENT, name)
    if existing is None:
        manifest = SELDON_DEPLOYMENT.manifest(name, ns.namespace, spec, labels, annotations)
        ns.create(SELDON_DEPLOYMENT, manifest)
        return
    current = existing.get("spec") or {}
    same = all(current.get(k) == v for k, v in spec.items())
    if not same or (existing["metadata"].get("labels") or {}).get(LABEL_CONFIG_HASH) != config_hash:
        ns.merge_patch(
            SELDON_DEPLOYMENT,
            name,
            {"metadata": {"labels": labels, "annotations": annotations}, "spec": spec},
        )


# ----------------------------------------------------------------- status
def condition_verdict(
    obj: dict[str, Any], types: tuple[str, ...], failed_reasons: tuple[str, ...] = ()
) -> Verdict:
    """Reads the first present condition of ``types`` for the object's latest generation.

    Args:
        obj: the object.
        types: condition types, by preference (e.g. ``ModelReady``, then ``Ready``).
        failed_reasons: reasons of a False condition that mean the change failed for good.

    Returns:
        The verdict, with Seldon's reason and message.
    """
    if not observed(obj):
        return Verdict(reason="Seldon has not processed the latest spec yet")
    conds = conditions(obj)
    cond = next((conds[t] for t in types if t in conds), None)
    if cond is None:
        return Verdict(reason="no status yet")
    words = f"{cond.get('reason') or ''}: {cond.get('message') or ''}".strip(": ")
    if cond.get("status") == "True":
        return Verdict(done=True, reason=words)
    if cond.get("reason") in failed_reasons:
        return Verdict(failed=True, reason=words)
    return Verdict(reason=words or "progressing")


def model_verdict(obj: dict[str, Any] | None) -> Verdict:
    """Reads a Core 2 ``Model`` into ready / failed / progressing, with Seldon's words.

    Args:
        obj: the object (None: absent).

    Returns:
        The verdict.
    """
    if obj is None:
        return Verdict(reason="the Model does not exist")
    return condition_verdict(obj, ("ModelReady", "Ready"), FAILED_REASONS)


def sdep_verdict(obj: dict[str, Any]) -> Verdict:
    """Reads a Core 1 ``SeldonDeployment``'s ``status.state`` (Available, Creating, Failed).

    Args:
        obj: the object.

    Returns:
        The verdict, with Seldon's ``description`` as the reason.
    """
    if not observed(obj):
        return Verdict(reason="Seldon has not processed the latest spec yet")
    status = obj.get("status") or {}
    state = str(status.get("state") or "")
    words = f"{state}: {status.get('description') or ''}".strip(": ")
    if state == "Available":
        return Verdict(done=True, reason=words)
    if state == "Failed":
        return Verdict(failed=True, reason=words)
    return Verdict(reason=words or "no status yet")


def experiment_verdict(obj: dict[str, Any]) -> Verdict:
    """Reads an ``Experiment``'s ``Ready`` condition.

    Args:
        obj: the object.

    Returns:
        The verdict (an experiment never "fails": its candidates do).
    """
    return condition_verdict(obj, ("Ready",))

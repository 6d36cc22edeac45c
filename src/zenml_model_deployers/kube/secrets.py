"""Kubernetes Secrets made from ZenML secrets, owned by a deployment.

The values are read from ZenML's secret store at call time and sent to the cluster only; they
never reach our config, status, artifact, logs or errors (each value is registered for
redaction as soon as it is read).
"""

from __future__ import annotations

import base64
from typing import Any

from zenml_model_deployers.errors import SecretResolutionError
from zenml_model_deployers.kube.objects import a_or_an, owned_by, ownership_labels, selector_for
from zenml_model_deployers.kube.resources import KubeNamespace
from zenml_model_deployers.secrets import remember_secret_value


def zenml_secret_values(secret_name: str) -> dict[str, str]:
    """Every key of a ZenML secret, resolved now.

    Args:
        secret_name: the ZenML secret's name.

    Returns:
        Key to value (register nothing of it anywhere but the cluster).

    Raises:
        SecretResolutionError: no such secret.
    """
    from zenml.client import Client

    try:
        secret = Client().get_secret(secret_name)
    except (KeyError, ValueError) as e:
        raise SecretResolutionError(
            f"ZenML secret '{secret_name}' (the storage credentials) does not exist.",
            hint=f"create it with `zenml secret create {secret_name} -i` (each key, its value at a prompt that does not echo).",
        ) from e
    values = {k: str(v) for k, v in secret.secret_values.items()}
    for v in values.values():
        remember_secret_value(v)
    return values


def apply_secret(
    ns: KubeNamespace, name: str, values: dict[str, str], labels: dict[str, str]
) -> None:
    """Creates or updates (merge patch) a Secret owned by the deployment.

    Args:
        ns: the namespace.
        name: the Secret's name.
        values: its data (plain text; sent base64-encoded).
        labels: our ownership labels.

    Raises:
        DeploymentExistsError: a Secret of that name exists and is not ours.
    """
    data = {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}
    core = ns.core()
    existing = _read_owned(ns, "Secret", "secret", name)
    if existing is not None:
        old_keys = set((existing.get("data") or {}).keys())
        patch = {
            "metadata": {"labels": labels},
            "data": {**dict.fromkeys(old_keys - set(data)), **data},
        }
        with ns.errors(f"Updating Secret '{name}' in namespace '{ns.namespace}'"):
            core.patch_namespaced_secret(name, ns.namespace, patch)
        return
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": ns.namespace, "labels": labels},
        "type": "Opaque",
        "data": data,
    }
    with ns.errors(f"Creating Secret '{name}' in namespace '{ns.namespace}'"):
        core.create_namespaced_secret(ns.namespace, body)


def apply_service_account(
    ns: KubeNamespace, name: str, secret: str, labels: dict[str, str]
) -> None:
    """Creates (or re-labels) a ServiceAccount owned by the deployment that carries a Secret
    (KServe's storage initializer reads credentials from the predictor's service account).

    Args:
        ns: the namespace.
        name: the ServiceAccount's name.
        secret: the Secret it carries.
        labels: our ownership labels.

    Raises:
        DeploymentExistsError: a ServiceAccount of that name exists and is not ours.
    """
    core = ns.core()
    existing = _read_owned(ns, "ServiceAccount", "service_account", name)
    want = [{"name": secret}]
    if existing is not None:
        if existing.get("secrets") == want:
            return
        with ns.errors(f"Updating ServiceAccount '{name}' in namespace '{ns.namespace}'"):
            core.patch_namespaced_service_account(
                name, ns.namespace, {"metadata": {"labels": labels}, "secrets": want}
            )
        return
    body = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": name, "namespace": ns.namespace, "labels": labels},
        "secrets": want,
    }
    with ns.errors(f"Creating ServiceAccount '{name}' in namespace '{ns.namespace}'"):
        core.create_namespaced_service_account(ns.namespace, body)


# The core kinds a deployment may own beside its custom resources -> the client's method
# suffix (``secret``: ``list_namespaced_secret``, ...).
_CORE_KINDS = {"Secret": "secret", "ServiceAccount": "service_account"}


def delete_owned(ns: KubeNamespace, *kinds: str) -> list[str]:
    """Deletes every object of these core kinds the deployment owns (by label, checked again
    here), kind by kind in the order given.

    Args:
        ns: the namespace.
        *kinds: ``Secret`` and/or ``ServiceAccount``.

    Returns:
        The names deleted.
    """
    return [name for kind in kinds for name in _delete_owned(ns, kind, _CORE_KINDS[kind])]


def storage_secret_name(deployment_name: str) -> str:
    """The Kubernetes Secret holding a deployment's storage credentials (and, where a flavor
    needs one, the ServiceAccount carrying it).

    Args:
        deployment_name: the deployment.

    Returns:
        Its name.
    """
    return f"{deployment_name}-storage"


def apply_storage_secret(ns: KubeNamespace, zenml_secret: str) -> str:
    """Creates or updates the deployment's storage Secret from a ZenML secret's keys.

    Args:
        ns: the deployment's namespace.
        zenml_secret: the ZenML secret's name.

    Returns:
        The Kubernetes Secret's name.
    """
    name = storage_secret_name(ns.deployment_name)
    apply_secret(ns, name, zenml_secret_values(zenml_secret), storage_labels(ns.deployment_name))
    return name


def storage_labels(deployment_name: str) -> dict[str, str]:
    """The ownership labels of a deployment's storage objects (no revision: they serve all).

    Args:
        deployment_name: the deployment.

    Returns:
        The labels.
    """
    return ownership_labels(deployment_name, 0, "", role="storage")


def _read_owned(ns: KubeNamespace, kind: str, api_name: str, name: str) -> dict[str, Any] | None:
    """The named object as JSON if it exists and the deployment owns it; None if absent.

    Raises:
        DeploymentExistsError: it exists and is not ours (it is left untouched).
    """
    from kubernetes.client.exceptions import ApiException

    from zenml_model_deployers.errors import DeploymentExistsError

    read = getattr(ns.core(), f"read_namespaced_{api_name}")
    with ns.errors(f"Reading {kind} '{name}' in namespace '{ns.namespace}'"):
        try:
            existing: dict[str, Any] = ns.api.sanitize_for_serialization(read(name, ns.namespace))
        except ApiException as e:
            if e.status != 404:
                raise
            return None
    if not owned_by(existing, ns.deployment_name):
        raise DeploymentExistsError(
            f"{a_or_an(kind)} '{name}' exists in namespace '{ns.namespace}' and "
            "zenml-model-deployers does not own it; it is left untouched.",
            deployment_name=ns.deployment_name,
            hint=f"deploy under another deployment_name, or remove that {kind} yourself.",
        )
    return existing


def _delete_owned(ns: KubeNamespace, kind: str, api_name: str) -> list[str]:
    """Deletes every object of a core kind the deployment owns (``api_name``: the client's
    method suffix, e.g. ``secret`` for ``list_namespaced_secret``)."""
    from kubernetes.client.exceptions import ApiException

    core = ns.core()
    with ns.errors(f"Listing {kind}s in namespace '{ns.namespace}'"):
        listed = ns.api.sanitize_for_serialization(
            getattr(core, f"list_namespaced_{api_name}")(
                ns.namespace, label_selector=selector_for(ns.deployment_name)
            )
        )
    deleted = []
    for item in listed.get("items") or []:
        if not owned_by(item, ns.deployment_name):
            continue
        name = item["metadata"]["name"]
        with ns.errors(f"Deleting {kind} '{name}' in namespace '{ns.namespace}'"):
            try:
                getattr(core, f"delete_namespaced_{api_name}")(name, ns.namespace)
            except ApiException as e:
                if e.status != 404:
                    raise
        deleted.append(name)
    return deleted

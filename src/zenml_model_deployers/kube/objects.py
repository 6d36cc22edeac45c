"""What an object of ours is, before any call to the API server: its kind, the labels and
annotation that say it is ours (and which deployment and revision it serves), and how an
object the API server returns reads (its conditions, whether its controller has seen its latest
spec, a verdict for a wait, whether a merge patch would change it)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict

from zenml_model_deployers.secrets import redact_obj

MANAGED_BY = "zenml-model-deployers"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_DEPLOYMENT = "zenml-model-deployers.io/deployment"
LABEL_REVISION = "zenml-model-deployers.io/revision"
LABEL_CONFIG_HASH = "zenml-model-deployers.io/config-hash"
LABEL_ROLE = "zenml-model-deployers.io/role"
ANNOTATION_CONFIG = "zenml-model-deployers.io/config"


class ResourceKind(BaseModel):
    """A namespaced custom resource kind.

    Attributes:
        group: API group, e.g. ``mlops.seldon.io``.
        version: e.g. ``v1alpha1``.
        plural: e.g. ``models``.
        kind: e.g. ``Model``.
        product: what installs it, for messages (e.g. "Seldon Core 2").
    """

    model_config = ConfigDict(frozen=True)

    group: str
    version: str
    plural: str
    kind: str
    product: str

    @classmethod
    def of(cls, api_version: str, kind: str, product: str) -> ResourceKind:
        """A kind from its ``apiVersion`` and ``kind`` (plural: the kind in lower case + s,
        as the Seldon and KServe CRDs name theirs).

        Args:
            api_version: ``group/version``.
            kind: e.g. ``Model``.
            product: what installs it, for messages.

        Returns:
            The kind.
        """
        group, version = api_version.split("/")
        plural = f"{kind.lower()}s"
        return cls(group=group, version=version, plural=plural, kind=kind, product=product)

    @property
    def api_version(self) -> str:
        """``group/version``."""
        return f"{self.group}/{self.version}"

    def manifest(
        self,
        name: str,
        namespace: str,
        spec: dict[str, Any],
        labels: dict[str, str],
        annotations: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """A complete object of this kind.

        Args:
            name: its name.
            namespace: its namespace.
            spec: its spec.
            labels: our ownership labels.
            annotations: its annotations (None: none).

        Returns:
            The manifest.
        """
        metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels}
        if annotations is not None:
            metadata["annotations"] = annotations
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "metadata": metadata,
            "spec": spec,
        }


def a_or_an(kind: str) -> str:
    """A kind with its indefinite article, for messages.

    Args:
        kind: e.g. ``InferenceService``.

    Returns:
        ``An InferenceService``, ``A Secret``.
    """
    return f"{'An' if kind[:1].upper() in 'AEIOU' else 'A'} {kind}"


def ownership_labels(
    deployment_name: str, revision: int, config_hash: str, role: str = "main"
) -> dict[str, str]:
    """The labels that say a resource is ours and which deployment and revision it serves.

    Args:
        deployment_name: the deployment.
        revision: its revision number.
        config_hash: its config hash.
        role: ``main`` or ``candidate`` (canaries) or ``storage`` (Secrets).

    Returns:
        Labels (all valid label values).
    """
    return {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_DEPLOYMENT: deployment_name,
        LABEL_REVISION: str(revision),
        LABEL_CONFIG_HASH: config_hash,
        LABEL_ROLE: role,
    }


def config_annotation(config: dict[str, Any]) -> dict[str, str]:
    """The annotation holding a deployment's redacted config (enough to adopt or recreate it).

    Args:
        config: the config as JSON-able data (secret references only, never values).

    Returns:
        ``{ANNOTATION_CONFIG: json}``.
    """
    return {ANNOTATION_CONFIG: json.dumps(redact_obj(config), sort_keys=True)}


def selector_for(deployment_name: str) -> str:
    """The label selector of everything a deployment owns.

    Args:
        deployment_name: the deployment.

    Returns:
        e.g. ``app.kubernetes.io/managed-by=zenml-model-deployers,...=iris``.
    """
    return f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_DEPLOYMENT}={deployment_name}"


def owned_by(obj: dict[str, Any], deployment_name: str) -> bool:
    """Tells whether an object carries our labels for this deployment.

    Args:
        obj: the object.
        deployment_name: the deployment.

    Returns:
        True if it is ours.
    """
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return bool(
        labels.get(LABEL_MANAGED_BY) == MANAGED_BY
        and labels.get(LABEL_DEPLOYMENT) == deployment_name
    )


def conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """An object's status conditions by type.

    Args:
        obj: the object.

    Returns:
        type -> condition.
    """
    return {str(c.get("type")): c for c in (obj.get("status") or {}).get("conditions") or [] if c}


def observed(obj: dict[str, Any], strict: bool = False) -> bool:
    """Whether the controller has processed the object's latest spec (its status's
    ``observedGeneration`` against ``metadata.generation``).

    A real API server counts ``metadata.generation``; where it is absent (an emulator) the
    status is taken as current.

    Args:
        obj: the object.
        strict: a status without ``observedGeneration`` is not current (KServe's own SDK
            checks so); otherwise it is taken as current.

    Returns:
        True if its status describes its spec.
    """
    gen = (obj.get("metadata") or {}).get("generation")
    seen = (obj.get("status") or {}).get("observedGeneration")
    if gen is None:
        return True
    if seen is None:
        return not strict
    return int(seen) >= int(gen)


def patch_changes_nothing(current: dict[str, Any], patch: dict[str, Any]) -> bool:
    """Whether a JSON merge patch would change nothing in ``current``.

    Args:
        current: the object (or a part of it).
        patch: the patch (None removes a field).

    Returns:
        True when applying it leaves ``current`` as it is.
    """
    for key, value in patch.items():
        if value is None:
            if key in current:
                return False
        elif isinstance(value, dict):
            sub = current.get(key)
            if not isinstance(sub, dict) or not patch_changes_nothing(sub, value):
                return False
        elif current.get(key) != value:
            return False
    return True


class Verdict(BaseModel):
    """What a wait's check says about an object.

    Attributes:
        done: the awaited condition holds.
        failed: the controller reports a failure (``reason`` says which).
        reason: the controller's own words.
    """

    done: bool = False
    failed: bool = False
    reason: str = ""

"""What the simulated cluster's controllers (Seldon-like, KServe-like) share: the namespace
they reconcile, the model server they load into, listing the kinds installed, the storage
credentials a model server reads, and status writes through the API server."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from zenml_model_deployers.testing.kube_cluster.crds import KINDS
from zenml_model_deployers.testing.kube_cluster.mlserver import MLServerHost


def now() -> str:
    """The time as Kubernetes writes it in conditions.

    Returns:
        e.g. ``2026-01-01T00:00:00Z``.
    """
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(eq=False)
class SimulatedController:
    """Base of the simulated controllers: what they are bound to in the cluster.

    Attributes:
        namespace: the namespace reconciled.
        install: the custom resource kinds installed.
        load_delay: seconds a model load takes at least (scheduling, pulling).
        mlserver: the model server models load into.
        objects: the API server's live objects of a kind (plural).
        secrets_seen: model -> the storage credentials its server read (shared by the
            controllers, for tests).
    """

    namespace: str
    install: tuple[str, ...]
    load_delay: float
    mlserver: MLServerHost
    objects: Callable[[str], list[dict[str, Any]]]
    secrets_seen: dict[str, dict[str, str]]

    def installed_items(self, custom: Any, plural: str) -> list[dict[str, Any]]:
        """The objects of a kind in the namespace ([] when the kind is not installed).

        Args:
            custom: ``CustomObjectsApi``.
            plural: e.g. ``models``.

        Returns:
            The objects.
        """
        if plural not in self.install:
            return []
        group, version, _, _ = KINDS[plural]
        items: list[dict[str, Any]] = custom.list_namespaced_custom_object(
            group, version, self.namespace, plural
        ).get("items", [])
        return items

    def read(self, custom: Any, plural: str, name: str) -> dict[str, Any] | None:
        """An object of the namespace (None: it does not exist).

        Args:
            custom: ``CustomObjectsApi``.
            plural: its kind.
            name: its name.

        Returns:
            The object.
        """
        from kubernetes.client.exceptions import ApiException

        group, version, _, _ = KINDS[plural]
        try:
            obj: dict[str, Any] = custom.get_namespaced_custom_object(
                group, version, self.namespace, plural, name
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return obj

    def patch_status(self, custom: Any, plural: str, name: str, status: dict[str, Any]) -> None:
        """Writes an object's status (an object deleted meanwhile is no error).

        Args:
            custom: ``CustomObjectsApi``.
            plural: its kind.
            name: its name.
            status: the ``status`` to merge.
        """
        from kubernetes.client.exceptions import ApiException

        group, version, _, _ = KINDS[plural]
        with contextlib.suppress(ApiException):
            custom.patch_namespaced_custom_object_status(
                group, version, self.namespace, plural, name, {"status": status}
            )

    def check_secret(self, core: Any, name: str, spec: dict[str, Any]) -> str:
        """The storage credentials a model's server reads: the Secret ``spec.secretName`` names
        must exist (its keys are recorded in :attr:`secrets_seen`).

        Args:
            core: ``CoreV1Api``.
            name: the model.
            spec: its spec.

        Returns:
            "" when readable (or none named); else the error a server reports.
        """
        from kubernetes.client.exceptions import ApiException

        secret_name = spec.get("secretName")
        if not secret_name:
            return ""
        try:
            secret = core.read_namespaced_secret(secret_name, self.namespace)
        except ApiException as e:
            if e.status == 404:
                return f"secret {secret_name} not found in namespace {self.namespace}"
            raise
        raw = core.api_client.sanitize_for_serialization(secret) if secret is not None else {}
        if not raw:
            # kmock answers typed reads with the raw object; read it from the store instead.
            found = [s for s in self.objects("secrets") if s["metadata"]["name"] == secret_name]
            raw = found[0] if found else {}
        data = raw.get("data") or {}
        self.secrets_seen[name] = {k: base64.b64decode(v).decode() for k, v in data.items()}
        return ""

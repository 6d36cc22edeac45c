"""Resources we own in a namespace, through the real ``kubernetes`` client: create /
merge-patch / read / delete, ownership checks, pod logs, and bounded waits for a condition
(watch, falling back to polling). What an object is (kind, labels, status) is ``objects.py``.

Updates are merge patches, never PUT: a PUT would drop what the controller or another tool
set on the object. Every wait has a deadline, shows progress and ends with the controller's
own reason when the object reports a failure.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from zenml_model_deployers.errors import (
    ConfigurationError,
    DeploymentError,
    DeploymentExistsError,
    DeploymentTimeoutError,
)
from zenml_model_deployers.kube.client import KubeTarget, api_client, api_status, kube_errors
from zenml_model_deployers.kube.objects import (
    LABEL_DEPLOYMENT,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    ResourceKind,
    Verdict,
    a_or_an,
    owned_by,
    selector_for,
)


class KubeNamespace:
    """Our resources in one namespace, through the real ``kubernetes`` client."""

    def __init__(self, target: KubeTarget, deployment_name: str) -> None:
        """Connects (lazily: the first call builds the client).

        Args:
            target: cluster and namespace.
            deployment_name: the deployment whose resources these are (for messages).
        """
        self.target = target
        self.namespace = target.namespace
        self.deployment_name = deployment_name
        self._api: Any = None

    # ----------------------------------------------------------------- clients
    @property
    def api(self) -> Any:
        """The ``ApiClient``."""
        if self._api is None:
            self._api = api_client(self.target)
        return self._api

    @property
    def server(self) -> str:
        """The API server's address."""
        return str(self.api.configuration.host)

    def custom(self) -> Any:
        """``CustomObjectsApi`` on our client."""
        from kubernetes import client

        return client.CustomObjectsApi(self.api)

    def core(self) -> Any:
        """``CoreV1Api`` on our client."""
        from kubernetes import client

        return client.CoreV1Api(self.api)

    def errors(self, what: str) -> Any:
        """:func:`kube_errors` for this deployment and server."""
        return kube_errors(what, self.deployment_name, self.server)

    # ----------------------------------------------------------------- preconditions
    def check_ready(self, kinds: Iterable[ResourceKind]) -> None:
        """Checks, before any write, that the namespace exists and the kinds are installed.

        A namespace that cannot be read for lack of RBAC (403) is not an error here: many
        deployers may only touch their own namespace, and the first write says so if it is gone.

        Args:
            kinds: the custom resource kinds the flavor writes.

        Raises:
            ConfigurationError: the namespace is missing, or a kind is not installed.
        """
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        try:
            with self.errors(f"Reading namespace '{self.namespace}'"):
                self.core().read_namespace(self.namespace)
        except DeploymentError as e:
            status = api_status(e)
            if status == 404:
                raise ConfigurationError(
                    f"Namespace '{self.namespace}' does not exist in the cluster at {self.server}.",
                    deployment_name=self.deployment_name,
                    hint=f"create it (`kubectl create namespace {self.namespace}`) or set "
                    "`kubernetes_namespace` to an existing one.",
                ) from e
            if status != 403:
                raise
        for kind in {k.api_version: k for k in kinds}.values():
            try:
                client.CustomObjectsApi(self.api).get_api_resources(kind.group, kind.version)
            except ApiException as e:
                if e.status == 404:
                    raise ConfigurationError(
                        f"{kind.product} is not installed in this cluster (no API group "
                        f"{kind.api_version} at {self.server}).",
                        deployment_name=self.deployment_name,
                        hint=f"install {kind.product} (its CRDs and controller), or pick the "
                        "API this cluster has.",
                    ) from e
                if e.status != 403:
                    with self.errors(f"Discovering {kind.api_version}"):
                        raise

    # ----------------------------------------------------------------- custom objects
    def get(self, kind: ResourceKind, name: str) -> dict[str, Any] | None:
        """Reads an object.

        Args:
            kind: its kind.
            name: its name.

        Returns:
            The object, or None if it does not exist.
        """
        from kubernetes.client.exceptions import ApiException

        with self.errors(f"Reading {kind.kind} '{name}' in namespace '{self.namespace}'"):
            try:
                obj: dict[str, Any] = self.custom().get_namespaced_custom_object(
                    kind.group, kind.version, self.namespace, kind.plural, name
                )
            except ApiException as e:
                if e.status == 404:
                    return None
                raise
        return obj

    def get_owned(self, kind: ResourceKind, name: str) -> dict[str, Any] | None:
        """Reads an object that must be ours if it exists.

        Args:
            kind: its kind.
            name: its name.

        Returns:
            The object, or None.

        Raises:
            DeploymentExistsError: an object of that name exists and we do not own it.
        """
        obj = self.get(kind, name)
        if obj is not None and not owned_by(obj, self.deployment_name):
            labels = (obj.get("metadata") or {}).get("labels") or {}
            raise DeploymentExistsError(
                f"{a_or_an(kind.kind)} '{name}' already exists in namespace '{self.namespace}' and "
                "zenml-model-deployers does not own it (it lacks our labels "
                f"{LABEL_MANAGED_BY}={MANAGED_BY}, {LABEL_DEPLOYMENT}={self.deployment_name}); "
                "it is left untouched.",
                deployment_name=self.deployment_name,
                backend_message=f"its labels: {labels}",
                hint="deploy under another deployment_name, or delete that resource yourself "
                "if it is yours to remove.",
            )
        return obj

    def create(self, kind: ResourceKind, body: dict[str, Any]) -> dict[str, Any]:
        """Creates an object and reads it back (some API servers answer a create with less).

        Args:
            kind: its kind.
            body: the manifest.

        Returns:
            The object as the server stores it.
        """
        name = body["metadata"]["name"]
        with self.errors(f"Creating {kind.kind} '{name}' in namespace '{self.namespace}'"):
            self.custom().create_namespaced_custom_object(
                kind.group, kind.version, self.namespace, kind.plural, body
            )
        return self._read_back(kind, name, "was created but cannot be read back")

    def merge_patch(self, kind: ResourceKind, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """Applies a JSON merge patch (RFC 7386; ``None`` removes a field) to an object.

        Args:
            kind: its kind.
            name: its name.
            patch: the patch.

        Returns:
            The object after the patch.
        """
        with self.errors(f"Patching {kind.kind} '{name}' in namespace '{self.namespace}'"):
            # A dict body is sent as application/merge-patch+json by the client.
            self.custom().patch_namespaced_custom_object(
                kind.group, kind.version, self.namespace, kind.plural, name, patch
            )
        return self._read_back(kind, name, "disappeared while it was patched")

    def _read_back(self, kind: ResourceKind, name: str, missing: str) -> dict[str, Any]:
        """The object as the server stores it after a write (some answer a write with less)."""
        obj = self.get(kind, name)
        if obj is None:
            raise DeploymentError(
                f"{kind.kind} '{name}' {missing}.", deployment_name=self.deployment_name
            )
        return obj

    def delete(self, kind: ResourceKind, name: str) -> bool:
        """Deletes an object (idempotent).

        Args:
            kind: its kind.
            name: its name.

        Returns:
            True if it existed.
        """
        from kubernetes.client.exceptions import ApiException

        with self.errors(f"Deleting {kind.kind} '{name}' in namespace '{self.namespace}'"):
            try:
                self.custom().delete_namespaced_custom_object(
                    kind.group, kind.version, self.namespace, kind.plural, name
                )
            except ApiException as e:
                if e.status == 404:
                    return False
                raise
        return True

    def delete_and_wait(self, kind: ResourceKind, name: str, timeout: float, what: str) -> None:
        """Deletes an object and waits until it is gone (or no longer ours: a namesake that
        another owner made meanwhile is not waited for).

        Args:
            kind: its kind.
            name: its name.
            timeout: seconds.
            what: the outcome, for messages (e.g. "deleted": "Model 'x' to be deleted").
        """
        self.delete(kind, name)
        self.wait_for(
            kind,
            name,
            lambda o: Verdict(done=o is None or not owned_by(o, self.deployment_name)),
            timeout,
            f"{kind.kind} '{name}' to be {what}",
        )

    def list_owned(self, kind: ResourceKind) -> list[dict[str, Any]]:
        """Every object of a kind this deployment owns.

        The label selector is sent (a real API server filters); the result is checked again
        here, so a server that ignores selectors cannot make us touch what is not ours.

        Args:
            kind: the kind.

        Returns:
            The objects.
        """
        with self.errors(f"Listing {kind.kind} objects in namespace '{self.namespace}'"):
            data = self.custom().list_namespaced_custom_object(
                kind.group,
                kind.version,
                self.namespace,
                kind.plural,
                label_selector=selector_for(self.deployment_name),
            )
        return [o for o in data.get("items", []) if owned_by(o, self.deployment_name)]

    # ----------------------------------------------------------------- pods
    def pod_log_lines(self, selector: str, tail: int | None = None) -> Iterator[str]:
        """The logs of the pods a label selector picks, each line prefixed with its pod; a
        line saying so where RBAC forbids listing pods or reading a log.

        The selector is sent (a real API server filters) and checked again here.

        Args:
            selector: one ``key=value`` label selector.
            tail: the last N lines of each pod.

        Yields:
            Lines.
        """
        from kubernetes.client.exceptions import ApiException

        core = self.core()
        try:
            pods = self.api.sanitize_for_serialization(
                core.list_namespaced_pod(self.namespace, label_selector=selector)
            )
        except ApiException as e:
            yield (
                f"cannot list the pods ({selector}) in namespace '{self.namespace}' "
                f"({e.status}): the server logs are not readable with these credentials."
            )
            return
        key, value = selector.split("=", 1)
        items = [
            p
            for p in (pods or {}).get("items") or []
            if ((p.get("metadata") or {}).get("labels") or {}).get(key) == value
        ]
        if not items:
            yield f"no pods ({selector}) in namespace '{self.namespace}'."
        for pod in items:
            pod_name = pod["metadata"]["name"]
            try:
                text = core.read_namespaced_pod_log(
                    pod_name, self.namespace, tail_lines=tail, _preload_content=False
                ).data.decode(errors="replace")
            except ApiException as e:
                yield f"cannot read the logs of pod {pod_name} ({e.status} {e.reason})."
                continue
            for line in text.splitlines():
                yield f"[{pod_name}] {line}"

    # ----------------------------------------------------------------- waits
    def wait_for(
        self,
        kind: ResourceKind,
        name: str,
        check: Callable[[dict[str, Any] | None], Verdict],
        timeout: float,
        what: str,
        poll_interval: float = 0.5,
    ) -> dict[str, Any] | None:
        """Waits until ``check`` says done, watching the object (polling if watching fails).

        Args:
            kind: its kind.
            name: its name.
            check: reads an object (None: it does not exist) into a verdict.
            timeout: seconds.
            what: what is awaited, for progress and errors.
            poll_interval: seconds between reads when polling.

        Returns:
            The object in its final state (None if the awaited state is "gone").

        Raises:
            DeploymentError: the controller reports a failure (its reason is the message).
            DeploymentTimeoutError: not done in time (the last reason seen is in it).
        """
        from zenml_model_deployers.progress import WaitProgress

        t0 = time.monotonic()
        deadline = t0 + timeout
        progress = WaitProgress(f"Waiting for {what}")
        last = Verdict()
        try:
            obj = self.get(kind, name)
            while True:
                last = check(obj)
                if last.failed:
                    raise DeploymentError(
                        f"{what} failed: {kind.product} reports it.",
                        deployment_name=self.deployment_name,
                        backend_message=last.reason or "(no reason given)",
                    )
                if last.done:
                    return obj
                now = time.monotonic()
                if now >= deadline:
                    raise DeploymentTimeoutError(
                        f"{what} did not finish within {timeout:.0f} s.",
                        deployment_name=self.deployment_name,
                        backend_message=last.reason or None,
                        hint=f"`kubectl -n {self.namespace} describe {kind.plural}.{kind.group} "
                        f"{name}` shows what the controller says; raise the timeout if it is "
                        "only slow.",
                    )
                progress.tick(now - t0, last.reason)
                obj = self._next_state(kind, name, obj, min(deadline - now, 5.0), poll_interval)
        finally:
            progress.done()

    def _next_state(
        self,
        kind: ResourceKind,
        name: str,
        current: dict[str, Any] | None,
        budget: float,
        poll_interval: float,
    ) -> dict[str, Any] | None:
        """The object's next state: the first change a watch reports within ``budget`` seconds,
        else (no change, or the watch failed) a fresh read after a pause."""
        from kubernetes import watch

        w = watch.Watch()
        t_end = time.monotonic() + budget
        try:
            for event in w.stream(
                self.custom().list_namespaced_custom_object,
                kind.group,
                kind.version,
                self.namespace,
                kind.plural,
                field_selector=f"metadata.name={name}",
                timeout_seconds=max(1, int(budget)),
                _request_timeout=budget + 1,
            ):
                obj = event.get("object") or {}
                if (obj.get("metadata") or {}).get("name") != name:
                    continue  # a server that ignores field selectors
                if event.get("type") == "DELETED":
                    return None
                if obj != current:
                    return dict(obj)
                if time.monotonic() >= t_end:
                    break
        except Exception:  # noqa: BLE001 - any watch failure falls back to polling
            time.sleep(min(poll_interval, max(0.0, t_end - time.monotonic())))
        finally:
            w.stop()
        return self.get(kind, name)

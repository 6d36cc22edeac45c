"""The service base of the cluster flavors (`zmd-seldon`, `zmd-kserve`): one resource per
deployment, named after it, in one namespace, updated in place (the shared loop of
``remote.InPlaceDeploymentService``); its status, logs, Prometheus settings and the wait until
a deleted model no longer answers are read the same way for both.

``kubernetes`` is imported only when a method talks to the cluster, so loading these services
(ZenML does it to list them) is cheap.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Callable, Generator, Iterator
from typing import Any, ClassVar

from pydantic import PrivateAttr

from zenml_model_deployers.config import DeploymentConfig
from zenml_model_deployers.errors import DeploymentError
from zenml_model_deployers.kube.config import KubeDeploymentConfig
from zenml_model_deployers.kube.resources import KubeNamespace, ResourceKind
from zenml_model_deployers.remote import InPlaceDeploymentService
from zenml_model_deployers.service import DeploymentStatus


class KubeDeploymentStatus(DeploymentStatus):
    """What the cluster last said about a deployment (each flavor adds its own fields).

    Attributes:
        namespace: where its resources are (set once created).
        stopped: stopped by ``stop`` (our record is kept, so ``start`` brings it back).
    """

    namespace: str | None = None
    stopped: bool = False


class KubeDeploymentService(InPlaceDeploymentService):
    """Base of the cluster flavors' services: one resource named after the deployment.

    A subclass says which resource it is (:meth:`resource_kind`), how its status reads as
    log lines (:meth:`status_lines`) and which pods serve it (:meth:`pod_selector`).
    """

    FIRST_POLL: ClassVar[float] = 0.1
    MAX_POLL: ClassVar[float] = 2.0
    SUPPORTS_TRAFFIC_SPLIT: ClassVar[bool] = True

    config: KubeDeploymentConfig
    status: KubeDeploymentStatus

    _ns: Any = PrivateAttr(default=None)

    def kube(self) -> KubeNamespace:
        """The deployment's namespace on its cluster (connects on first use).

        Returns:
            The namespace handle.
        """
        if self._ns is None or self._ns.target != self.config.target():
            self._ns = KubeNamespace(self.config.target(), self.deployment_name)
        return self._ns  # type: ignore[no-any-return]

    @property
    def resource_name(self) -> str:
        """The resource's name (the deployment name)."""
        return self.deployment_name

    @property
    def _namespace(self) -> str:
        return self.status.namespace or self.config.namespace or "default"

    @abstractmethod
    def resource_kind(self) -> ResourceKind:
        """The kind of the deployment's resource (what its status is read from).

        Returns:
            The kind.
        """

    @abstractmethod
    def status_lines(self, obj: dict[str, Any]) -> Iterator[str]:
        """The resource's status as log lines (its conditions, or its state).

        Args:
            obj: the resource.

        Returns:
            The lines.
        """

    @abstractmethod
    def pod_selector(self) -> str:
        """The label selector (one ``key=value``) of the pods that serve the model.

        Returns:
            The selector.
        """

    def get_logs(self, follow: bool = False, tail: int | None = None) -> Generator[str, bool, None]:
        """The resource's status (:meth:`status_lines`), then the logs of the pods that serve
        it (where RBAC allows).

        Args:
            follow: ignored (the lines read now are returned).
            tail: the last N lines of each pod.

        Yields:
            Lines.
        """
        ns = self.kube()
        kind = self.resource_kind()
        try:
            obj = ns.get(kind, self.resource_name)
        except DeploymentError as e:
            yield f"cannot read {kind.kind} '{self.resource_name}': {str(e).splitlines()[0]}"
            return
        if obj is None:
            yield f"{kind.kind} '{self.resource_name}' does not exist in namespace '{ns.namespace}'."
        else:
            yield from self.status_lines(obj)
        yield from ns.pod_log_lines(self.pod_selector(), tail)

    def adopt_metrics_settings(self, config: DeploymentConfig) -> None:
        """Reads metrics from the Prometheus the rollout's config names (the component's
        ``prometheus_url`` may have been set after this deployment was made).

        Args:
            config: the rollout's candidate config.
        """
        from zenml_model_deployers.kube.prometheus import adopt_settings

        self.config = adopt_settings(self.config, config)

    def wait_until_unserved(
        self, still_serves: Callable[[], bool], timeout: float, message: str, hint: str
    ) -> None:
        """Returns once the model no longer answers (the backend drops its routes shortly
        after the resource is deleted), so a stopped or deleted deployment serves nothing.

        Args:
            still_serves: asks the endpoint whether the model still answers.
            timeout: seconds.
            message: the error's first words; `` after <timeout> s.`` is added.
            hint: what to check.

        Raises:
            DeploymentError: it still answers after ``timeout``.
        """
        deadline = time.monotonic() + timeout
        while still_serves():
            if time.monotonic() >= deadline:
                raise DeploymentError(
                    f"{message} after {timeout:.0f} s.",
                    deployment_name=self.deployment_name,
                    hint=hint,
                )
            time.sleep(0.1)


__all__ = ["KubeDeploymentService", "KubeDeploymentStatus"]

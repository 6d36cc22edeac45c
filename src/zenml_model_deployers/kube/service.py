"""The service base of the cluster flavors (`zmd-seldon`, `zmd-kserve`): one resource per
deployment, named after it, in one namespace, updated in place (the shared loop of
``remote.InPlaceDeploymentService``); its revision labels and config annotation, storage
Secret, status, logs, readiness request, per-revision metrics, Prometheus settings and the
wait until a deleted model no longer answers are the same for both.

``kubernetes`` is imported only when a method talks to the cluster, so loading these services
(ZenML does it to list them) is cheap.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import PrivateAttr
from zenml.enums import ServiceState

from zenml_model_deployers.config import DeploymentConfig
from zenml_model_deployers.errors import DeploymentError
from zenml_model_deployers.kube.config import KubeDeploymentConfig
from zenml_model_deployers.kube.objects import (
    ResourceKind,
    Verdict,
    conditions,
    config_annotation,
    ownership_labels,
)
from zenml_model_deployers.kube.resources import KubeNamespace
from zenml_model_deployers.metrics import RevisionMetrics
from zenml_model_deployers.remote import InPlaceDeploymentService, ServingTarget
from zenml_model_deployers.service import DeploymentStatus

if TYPE_CHECKING:
    from zenml_model_deployers.kube.prometheus import MetricNames, PrometheusClient


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

    A subclass says which resource it is (:meth:`resource_kind`) and which pods serve it
    (:meth:`pod_selector`), and may read its status as other log lines (:meth:`status_lines`).
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

    def status_lines(self, obj: dict[str, Any]) -> Iterator[str]:
        """The resource's conditions, one line each (``get_logs`` then shows the pods' logs).

        Args:
            obj: the resource.

        Yields:
            Lines.
        """
        for cond in conditions(obj).values():
            yield (
                f"[{self.resource_kind().kind} {self.resource_name}] {cond.get('type')}="
                f"{cond.get('status')} {cond.get('reason') or ''} "
                f"{cond.get('message') or ''}".rstrip()
            )

    @abstractmethod
    def pod_selector(self) -> str:
        """The label selector (one ``key=value``) of the pods that serve the model.

        Returns:
            The selector.
        """

    # ----------------------------------------------------------------- shared by the flavors
    def serving_target(self) -> ServingTarget:
        """What serves now: the recorded revision and canary, else the config alone.

        Returns:
            The target.
        """
        return self.live_target() or ServingTarget(stable=self.config)

    def next_revision(self, cfg: DeploymentConfig) -> int:
        """The revision number ``cfg`` is written with: the recorded one, plus one when ``cfg``
        is not the recorded revision.

        Args:
            cfg: the revision to write.

        Returns:
            The number (its ``revision`` label).
        """
        return self.status.revision + (1 if cfg.config_hash() != self.status.config_hash else 0)

    def revision_metadata(
        self, cfg: DeploymentConfig, revision: int, role: str = "main"
    ) -> tuple[dict[str, str], dict[str, str]]:
        """The labels and the config annotation of an object serving a revision.

        Args:
            cfg: the revision.
            revision: its number.
            role: ``main``, ``candidate`` or ``experiment``.

        Returns:
            (labels, annotations).
        """
        labels = ownership_labels(self.deployment_name, revision, cfg.config_hash(), role)
        data = cfg.model_dump(mode="json")
        # A config class that moved is named by its first path (FORMER_SOURCES), so the objects
        # written before and after the move carry the same annotation: an update after an
        # upgrade sends no metadata-only patch.
        former = type(cfg).__dict__.get("FORMER_SOURCES", ())
        if former:
            data["type"] = former[0]
        return labels, config_annotation(data)

    def apply_storage_secret(self, cfg: KubeDeploymentConfig) -> str | None:
        """Writes the storage Secret from the config's ZenML secret (None: it names none).

        Args:
            cfg: the revision.

        Returns:
            The Kubernetes Secret's name, or None.
        """
        if not cfg.storage_secret:
            return None
        from zenml_model_deployers.kube.secrets import apply_storage_secret

        return apply_storage_secret(self.kube(), cfg.storage_secret)

    def answers_ready(self, url: str, headers: dict[str, str]) -> bool:
        """The readiness request: the model server (through the mesh or gateway) says 200.

        Args:
            url: the readiness URL.
            headers: routing headers.

        Returns:
            True on 200; False on any other answer or none.
        """
        import requests

        try:
            r = self._http().get(url, headers=headers, timeout=5)
        except requests.RequestException:
            return False
        return bool(r.status_code == 200)

    def state_from(self, verdict: Verdict) -> tuple[ServiceState, str]:
        """ZenML's state of a resource that exists, from what its controller says.

        Args:
            verdict: ready / failed / progressing, in the backend's words.

        Returns:
            (state, message).
        """
        if verdict.done:
            return ServiceState.ACTIVE, ""
        if verdict.failed:
            return ServiceState.ERROR, f"{self.BACKEND}: {verdict.reason}"
        return ServiceState.PENDING_STARTUP, f"{self.BACKEND}: {verdict.reason}"

    def absent_state(self, stopped: str, noun: str) -> tuple[ServiceState, str]:
        """ZenML's state of a deployment whose resource does not exist.

        Args:
            stopped: the message when ``stop`` removed it.
            noun: what is missing otherwise (e.g. ``the Model``).

        Returns:
            (state, message).
        """
        if self.status.stopped:
            return ServiceState.INACTIVE, stopped
        return ServiceState.ERROR, f"{noun} does not exist (deleted outside zmd?)"

    def metrics_by_revision(
        self,
        prom: PrometheusClient,
        revisions: list[tuple[DeploymentConfig, str | None]],
        names: MetricNames,
        window: float | None,
    ) -> dict[str, RevisionMetrics]:
        """Each revision's request metrics from Prometheus.

        Args:
            prom: the deployment's Prometheus.
            revisions: (revision, the label matcher of its series; None: nothing rolled out
                yet, so no data, never a pass).
            names: the series the model servers export.
            window: seconds, or None for cumulative counts.

        Returns:
            config hash -> metrics.
        """
        out = {}
        for cfg, matcher in revisions:
            h = cfg.config_hash()
            if matcher is None:
                out[h] = RevisionMetrics(config_hash=h, window_s=window)
            else:
                out[h] = prom.revision_metrics(h, matcher, names, window=window)
        return out

    def mark_stopped(self, message: str) -> None:
        """Records that ``stop`` took the model down (our record stays for ``start``).

        Args:
            message: the status message (what was done).
        """
        self.status.stopped = True
        self.admin_state = ServiceState.INACTIVE
        self.status.update_state(ServiceState.INACTIVE, message)

    def describe(self) -> dict[str, Any]:
        """The run metadata / CLI description, plus where the resource lives.

        Returns:
            A JSON-able dict.
        """
        d = super().describe()
        d["namespace"] = self.status.namespace or self.config.namespace
        kind = self.resource_kind()
        d["resource"] = f"{kind.plural}.{kind.group}/{self.resource_name}"
        return d

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

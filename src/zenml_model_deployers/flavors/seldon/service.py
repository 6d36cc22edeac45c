"""A model served by Seldon Core 2 (a ``Model`` per deployment), updated in place.

The URL is the Seldon inference endpoint's, the same for every revision: requests carry the
``Seldon-Model: <name>`` header and the mesh routes them to the model's current version. An
update patches the same ``Model``: Seldon loads the new version while the old one serves, and
a version that fails to load is rolled back by patching the previous spec again (the shared
loop of ``remote.InPlaceDeploymentService``). ``kubernetes`` is imported only when a method
talks to the cluster, so loading these services (ZenML does it to list them) is cheap.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, ClassVar

from zenml.enums import ServiceState
from zenml.models.v2.misc.service import ServiceType

from zenml_model_deployers.config import DeploymentConfig
from zenml_model_deployers.errors import ConfigurationError, DeploymentError
from zenml_model_deployers.flavors.seldon import backend
from zenml_model_deployers.flavors.seldon.backend import (
    EXPERIMENT,
    MODEL,
    SELDON_DEPLOYMENT,
    candidate_name,
    experiment_verdict,
    model_verdict,
    sdep_verdict,
)
from zenml_model_deployers.flavors.seldon.config import SeldonDeploymentConfig
from zenml_model_deployers.flavors.seldon.flavor import FLAVOR_NAME
from zenml_model_deployers.flavors.seldon.protocol import (
    decode_seldon,
    decode_v2,
    encode_seldon,
    encode_v2,
)
from zenml_model_deployers.kube.objects import LABEL_CONFIG_HASH, ResourceKind, Verdict, observed
from zenml_model_deployers.kube.service import (
    KubeDeploymentService,
    KubeDeploymentStatus,
)
from zenml_model_deployers.kube.v2protocol import EXAMPLE_V2_BODY
from zenml_model_deployers.metrics import RevisionMetrics
from zenml_model_deployers.remote import BackendState, ServingTarget
from zenml_model_deployers.service import serving_type


class SeldonDeploymentStatus(KubeDeploymentStatus):
    """What the cluster last said about the deployment.

    Attributes:
        namespace: where its resources are (set once created).
        stopped: stopped by ``stop`` (the ``Model`` is unloaded; our record is kept).
        seldon_state: the last condition read (e.g. ``ModelAvailable``).
        seldon_message: Seldon's last message.
    """

    seldon_state: str = ""
    seldon_message: str = ""


class SeldonDeploymentService(KubeDeploymentService):
    """A model on Seldon Core 2: one ``Model`` named after the deployment."""

    SERVICE_TYPE: ClassVar[ServiceType] = serving_type(
        FLAVOR_NAME, "Seldon Core model managed by zenml-model-deployers"
    )
    FLAVOR: ClassVar[str] = FLAVOR_NAME
    BACKEND: ClassVar[str] = "Seldon"

    config: SeldonDeploymentConfig
    status: SeldonDeploymentStatus

    # ----------------------------------------------------------------- helpers
    @property
    def core1(self) -> bool:
        """Whether this deployment is a Seldon Core 1 ``SeldonDeployment``."""
        return self.config.seldon_api == "v1"

    def resource_kind(self) -> ResourceKind:
        """The Core 2 ``Model`` (or Core 1 ``SeldonDeployment``) named after the deployment.

        Returns:
            Its kind.
        """
        return SELDON_DEPLOYMENT if self.core1 else MODEL

    def predict_path(self) -> str:
        """The inference path: Core 2 ``/v2/models/{name}/infer``; Core 1
        ``/seldon/{ns}/{name}/api/v1.0/predictions`` (protocol seldon) or
        ``/seldon/{ns}/{name}/v2/models/classifier/infer`` (protocol v2).

        Returns:
            The path.
        """
        if not self.core1:
            return f"/v2/models/{self.resource_name}/infer"
        prefix = f"/seldon/{self._namespace}/{self.resource_name}"
        if self.config.protocol == "seldon":
            return f"{prefix}/api/v1.0/predictions"
        return f"{prefix}/v2/models/{backend.GRAPH_NAME}/infer"

    def format_request(self, data: Any) -> tuple[dict[str, str], bytes]:
        """An OIP V2 request (with the ``Seldon-Model`` header Core 2's mesh routes by), or a
        Seldon protocol request (``{"data": {"ndarray": rows}}``) for Core 1's ``seldon``.

        Args:
            data: a DataFrame, ndarray, list of rows, or a ready request dict.

        Returns:
            (headers, body).
        """
        headers = {"Content-Type": "application/json"}
        if not self.core1:
            headers["Seldon-Model"] = self.resource_name
        if self.core1 and self.config.protocol == "seldon":
            return headers, json.dumps(encode_seldon(data)).encode()
        return headers, json.dumps(encode_v2(data)).encode()

    def parse_response(self, body: bytes) -> Any:
        """The predictions of a V2 or Seldon protocol response.

        Args:
            body: the response body.

        Returns:
            A list.
        """
        data = json.loads(body)
        if isinstance(data, dict) and "data" in data and "outputs" not in data:
            return decode_seldon(data)
        return decode_v2(data)

    def curl_example(self) -> str:
        """A request in the deployment's protocol, with Core 2's routing header (the artifact
        card shows it).

        Returns:
            A curl command line.
        """
        url = self.prediction_url or "(not deployed)"
        if self.core1 and self.config.protocol == "seldon":
            body = '{"data": {"ndarray": [[0.1, 0.2, 0.3, 0.4]]}}'
            return f"curl -s -X POST {url} -H 'Content-Type: application/json' -d '{body}'"
        body = EXAMPLE_V2_BODY
        header = "" if self.core1 else f" -H 'Seldon-Model: {self.resource_name}'"
        return f"curl -s -X POST {url} -H 'Content-Type: application/json'{header} -d '{body}'"

    def _require_base_url(self) -> str:
        if not self.config.base_url:
            raise ConfigurationError(
                f"Deployment '{self.deployment_name}' has no Seldon inference endpoint URL.",
                deployment_name=self.deployment_name,
                hint="set the component's `base_url` (the external address of the "
                "seldon-mesh service, e.g. `kubectl get svc seldon-mesh`).",
            )
        return self.config.base_url.rstrip("/")

    # ----------------------------------------------------------------- in-place hooks
    def apply_target(self, target: ServingTarget, previous: ServingTarget | None) -> None:
        """Creates or merge-patches the ``Model`` to ``target``; with a canary candidate, also
        its ``Model`` and the ``Experiment`` splitting the traffic (removed without one).

        Only what differs is written: an unchanged object gets no request.

        Args:
            target: what to serve.
            previous: what served until now (None: create).
        """
        cfg = target.stable
        assert isinstance(cfg, SeldonDeploymentConfig)
        if previous is not None and previous.stable.seldon_api != cfg.seldon_api:  # type: ignore[attr-defined]
            raise ConfigurationError(
                f"Deployment '{self.deployment_name}' runs on seldon_api "
                f"'{previous.stable.seldon_api}': it cannot move to '{cfg.seldon_api}' in place.",  # type: ignore[attr-defined]
                deployment_name=self.deployment_name,
                hint="deploy with policy='replace' (delete, then create), or another name.",
            )
        if self.core1:
            self._apply_v1(target, previous)
            return
        base_url = self._require_base_url()
        ns = self.kube()
        candidate = target.candidate if target.candidate_percent else None
        if previous is None:
            ns.check_ready([MODEL] + ([EXPERIMENT] if candidate else []))
            # A name someone else's Model holds is refused before anything of ours is made.
            ns.get_owned(MODEL, self.resource_name)
        self.apply_storage_secret(cfg)
        revision = self.next_revision(cfg)
        self._ensure_model(self.resource_name, cfg, revision, "main")
        keep = {self.resource_name}
        if candidate is not None:
            assert isinstance(candidate, SeldonDeploymentConfig)
            cname = candidate_name(self.deployment_name, candidate.config_hash())
            keep.add(cname)
            self._ensure_model(cname, candidate, revision + 1, "candidate")
            labels, _ = self.revision_metadata(cfg, self.status.revision, "experiment")
            backend.ensure_experiment(
                ns, self.resource_name, cname, target.candidate_percent, labels
            )
        elif ns.get_owned(EXPERIMENT, self.resource_name) is not None:
            ns.delete(EXPERIMENT, self.resource_name)
        for obj in ns.list_owned(MODEL):
            if obj["metadata"]["name"] not in keep:
                ns.delete(MODEL, obj["metadata"]["name"])
        self.status.namespace = ns.namespace
        self.status.url = base_url

    def _apply_v1(
        self, target: ServingTarget, previous: ServingTarget | None, stopped: bool = False
    ) -> None:
        """Creates or merge-patches the ``SeldonDeployment`` (a canary is a second predictor
        with ``traffic``; ``stopped`` sets every predictor's replicas to 0)."""
        cfg = target.stable
        assert isinstance(cfg, SeldonDeploymentConfig)
        base_url = self._require_base_url()
        ns = self.kube()
        if previous is None:
            ns.check_ready([SELDON_DEPLOYMENT])
            ns.get_owned(SELDON_DEPLOYMENT, self.resource_name)
        self.apply_storage_secret(cfg)
        candidate = target.candidate if target.candidate_percent else None
        spec = backend.seldon_deployment_spec(
            self.resource_name,
            cfg,
            candidate,  # type: ignore[arg-type]
            target.candidate_percent,
            stopped=stopped,
        )
        labels, annotations = self.revision_metadata(cfg, self.next_revision(cfg))
        backend.ensure_seldon_deployment(
            ns, self.resource_name, spec, cfg.config_hash(), labels, annotations
        )
        self.status.namespace = ns.namespace
        self.status.url = base_url

    def _ensure_model(
        self, name: str, cfg: SeldonDeploymentConfig, revision: int, role: str
    ) -> None:
        """Creates the Model, or patches it when its spec or revision labels differ."""
        labels, annotations = self.revision_metadata(cfg, revision, role)
        backend.ensure_model(self.kube(), name, cfg, labels, annotations)

    def read_backend(self) -> BackendState:
        """Reads the deployment's Models and Experiment.

        Returns:
            Its state, in Seldon's words (failed if a Model it owns failed to load).
        """
        ns = self.kube()
        if self.core1:
            return self._read_v1()
        main = ns.get(MODEL, self.resource_name)
        if main is None:
            return BackendState(state="Absent", gone=True)
        models = {o["metadata"]["name"]: o for o in ns.list_owned(MODEL)}
        models[self.resource_name] = main
        experiment = ns.get_owned(EXPERIMENT, self.resource_name)
        verdicts = {name: model_verdict(obj) for name, obj in models.items()}
        failed = [f"{n}: {v.reason}" for n, v in verdicts.items() if v.failed]
        waiting = [f"{n}: {v.reason}" for n, v in verdicts.items() if not v.done and not v.failed]
        if experiment is not None:
            ev = experiment_verdict(experiment)
            if not ev.done:
                waiting.append(f"Experiment {self.resource_name}: {ev.reason}")
        state = "Failed" if failed else ("Progressing" if waiting else "Ready")
        message = "; ".join(failed or waiting) or verdicts[self.resource_name].reason
        self.status.seldon_state = state
        self.status.seldon_message = message
        return BackendState(
            state=state,
            message=message,
            failed=bool(failed),
            url=self.config.base_url.rstrip("/") or None,
            raw={"models": models, "experiment": experiment},
        )

    def _read_v1(self) -> BackendState:
        obj = self.kube().get(SELDON_DEPLOYMENT, self.resource_name)
        if obj is None:
            return BackendState(state="Absent", gone=True)
        verdict = sdep_verdict(obj)
        state = "Ready" if verdict.done else ("Failed" if verdict.failed else "Progressing")
        self.status.seldon_state = state
        self.status.seldon_message = verdict.reason
        return BackendState(
            state=state,
            message=verdict.reason,
            failed=verdict.failed,
            url=self.config.base_url.rstrip("/") or None,
            raw=obj,
        )

    def serves(self, state: BackendState, target: ServingTarget) -> bool:
        """Ready, on the target's revisions and split, and the mesh answers for the model.

        Args:
            state: the state read.
            target: what should serve.

        Returns:
            True when requests reach the target.
        """
        if state.state != "Ready":
            return False
        if self.core1:
            return self._serves_v1(state.raw or {}, target)
        raw = state.raw or {}
        models: dict[str, Any] = raw.get("models") or {}
        expected = {self.resource_name: target.stable}
        candidate = target.candidate if target.candidate_percent else None
        if candidate is not None:
            cname = candidate_name(self.deployment_name, candidate.config_hash())
            expected[cname] = candidate
        if set(models) != set(expected):
            return False
        for name, cfg in expected.items():
            obj = models[name]
            labels = (obj.get("metadata") or {}).get("labels") or {}
            if labels.get(LABEL_CONFIG_HASH) != cfg.config_hash():
                return False
            if (obj.get("spec") or {}).get("storageUri") != cfg.model_uri:
                return False
        experiment = raw.get("experiment")
        if candidate is None:
            if experiment is not None:
                return False
        else:
            want = backend.experiment_spec(self.resource_name, cname, target.candidate_percent)
            if experiment is None or experiment.get("spec") != want:
                return False
        return self._mesh_ready()

    def _serves_v1(self, obj: dict[str, Any], target: ServingTarget) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        if labels.get(LABEL_CONFIG_HASH) != target.stable.config_hash():
            return False
        want = backend.seldon_deployment_spec(
            self.resource_name,
            target.stable,  # type: ignore[arg-type]
            target.candidate if target.candidate_percent else None,  # type: ignore[arg-type]
            target.candidate_percent,
        )
        if (obj.get("spec") or {}).get("predictors") != want["predictors"]:
            return False
        return self._mesh_ready()

    def _mesh_ready(self) -> bool:
        """The health request: the mesh (Core 2) or the deployment's executor (Core 1) says
        the model is ready to answer."""
        headers = {} if self.core1 else {"Seldon-Model": self.resource_name}
        if self.core1:
            prefix = f"/seldon/{self._namespace}/{self.resource_name}"
            path = (
                f"{prefix}/api/v1.0/health/status"
                if self.config.protocol == "seldon"
                else f"{prefix}/v2/health/ready"
            )
        else:
            path = f"/v2/models/{self.resource_name}/ready"
        return self.answers_ready(f"{self._require_base_url()}{path}", headers)

    # ----------------------------------------------------------------- lifecycle hooks
    def start_backend(self, timeout: float) -> None:
        """Loads the recorded revision (and canary) again: same name, same URL; blocks until
        it serves.

        Args:
            timeout: seconds.
        """
        target = self.serving_target()
        if self.core1:
            # Core 1 keeps the SeldonDeployment while stopped: restore its replicas.
            self._apply_v1(target, target)
        else:
            self.apply_target(target, None)
        self.wait_until_serving(target, timeout, "start")
        self.status.stopped = False
        self.mark_ready()

    def stop_backend(self, timeout: float) -> None:
        """Unloads the model by deleting its ``Model``s and ``Experiment`` (our record and the
        storage Secret stay).

        Seldon Core 2 frees the server's memory for a deleted Model; ``start`` creates it
        again from the recorded revision under the same name, so the URL does not change.

        Args:
            timeout: seconds to wait until they are gone.
        """
        if self.core1:
            self._stop_v1(timeout)
        elif self._delete_objects(timeout, "unloaded"):
            self._wait_mesh_forgets(timeout)
        self.mark_stopped("stopped (the Model is unloaded)")

    def _wait_mesh_forgets(self, timeout: float) -> None:
        # Seldon unloads a model shortly after its resource is deleted.
        self.wait_until_unserved(
            self._mesh_ready,
            timeout,
            f"'{self.resource_name}' was deleted but Seldon still serves it",
            "check the Seldon scheduler's logs.",
        )

    def _stop_v1(self, timeout: float) -> None:
        """Core 1: every predictor to replicas 0 (``start`` restores the configured ones)."""
        ns = self.kube()
        if ns.get_owned(SELDON_DEPLOYMENT, self.resource_name) is None:
            return
        target = self.serving_target()
        self._apply_v1(target, target, stopped=True)
        ns.wait_for(
            SELDON_DEPLOYMENT,
            self.resource_name,
            lambda o: Verdict(done=o is None or observed(o), reason="scaling to 0"),
            timeout,
            f"SeldonDeployment '{self.resource_name}' to scale to 0",
        )

    def delete_backend(self, timeout: float) -> None:
        """Deletes the deployment's Models, Experiment and Secrets, nothing else.

        Args:
            timeout: seconds to wait until the Models are gone.
        """
        from zenml_model_deployers.kube.secrets import delete_owned

        # The Secrets go even when a wait fails: nothing of ours may outlive a delete.
        try:
            if self._delete_objects(timeout, "deleted") and self.config.base_url:
                self._wait_mesh_forgets(timeout)
        finally:
            delete_owned(self.kube(), "Secret")

    def _delete_objects(self, timeout: float, what: str) -> bool:
        """Deletes our objects of the deployment and waits until they are gone.

        Returns:
            Whether a Model (Core 2) or SeldonDeployment (Core 1) of ours was deleted, i.e.
            whether the mesh serves a name of ours that it must now forget. A Model of that name
            we do not own stays, serving: nothing of ours is to wait for then.
        """
        ns = self.kube()
        deleted = False
        if ns.get_owned(SELDON_DEPLOYMENT, self.resource_name) is not None:
            ns.delete_and_wait(SELDON_DEPLOYMENT, self.resource_name, timeout, what)
            deleted = True
        if self.core1:
            return deleted
        if ns.get_owned(EXPERIMENT, self.resource_name) is not None:
            ns.delete(EXPERIMENT, self.resource_name)
        for obj in ns.list_owned(MODEL):
            ns.delete_and_wait(MODEL, obj["metadata"]["name"], timeout, what)
            deleted = True
        return deleted

    def check_status(self) -> tuple[ServiceState, str]:
        """Reads the ``Model`` (one GET).

        Returns:
            (state, message).
        """
        try:
            obj = self.kube().get(self.resource_kind(), self.resource_name)
        except DeploymentError as e:
            return ServiceState.ERROR, str(e).splitlines()[0]
        if self.core1 and obj is not None:
            if self.status.stopped:
                return ServiceState.INACTIVE, "stopped (replicas 0)"
            return self.state_from(sdep_verdict(obj))
        if obj is None:
            return self.absent_state("stopped (the Model is unloaded)", "the Model")
        return self.state_from(model_verdict(obj))

    def status_lines(self, obj: dict[str, Any]) -> Iterator[str]:
        """The Model's conditions, one line each, or the SeldonDeployment's state
        (``get_logs`` then shows the model servers' pod logs).

        Args:
            obj: the Model or SeldonDeployment.

        Yields:
            Lines.
        """
        if not self.core1:
            yield from super().status_lines(obj)
            return
        status = obj.get("status") or {}
        yield (
            f"[{SELDON_DEPLOYMENT.kind} {self.resource_name}] "
            f"state={status.get('state')} {status.get('description') or ''}".rstrip()
        )

    def pod_selector(self) -> str:
        """Core 2 models run on a Server's pods; Core 1 deployments have their own pods.

        Returns:
            The selector.
        """
        if self.core1:
            return f"seldon-deployment-id={self.resource_name}"
        return f"seldon-server-name={self.config.server or 'mlserver'}"

    def read_revision_metrics(self, window: float | None = None) -> dict[str, RevisionMetrics]:
        """Requests, failures and latency per revision, from the Prometheus configured on the
        component (``prometheus_url``), which scrapes the model servers: MLServer's
        ``model_infer_request_success_total`` / ``..._failure_total`` counters, every version
        of each ``Model`` (``<model>_<version>``). Seldon exports no latency histogram per
        model, so no percentiles (the p95 gate is not measured). See
        :mod:`zenml_model_deployers.kube.prometheus`.

        Args:
            window: seconds (``increase``/``histogram_quantile`` over that range); None:
                cumulative counts (the rollout differences two readings).

        Returns:
            config hash -> metrics, for the stable revision and the canary's candidate (zero
            requests where Prometheus has no data: never enough for a rollout's verdict).

        Raises:
            ConfigurationError: no ``prometheus_url``, or Seldon Core 1.
            DeploymentError: Prometheus unreachable or answering an error.
        """
        from zenml_model_deployers.kube.prometheus import MLSERVER, client_for, version_matcher

        prom = client_for(self.config, self.FLAVOR, "the model servers")
        if self.core1:
            raise ConfigurationError(
                f"Flavor {self.FLAVOR} reads request metrics per revision only for Seldon "
                f"Core 2 (deployment '{self.deployment_name}' is Core 1).",
                deployment_name=self.deployment_name,
                hint="deploy with seldon_api='v2', or without policy='canary'.",
            )
        live = self.serving_target()
        revisions: list[tuple[DeploymentConfig, str | None]] = [
            (live.stable, version_matcher("model", self.resource_name))
        ]
        if live.candidate is not None:
            cname = candidate_name(self.deployment_name, live.candidate.config_hash())
            revisions.append((live.candidate, version_matcher("model", cname)))
        return self.metrics_by_revision(prom, revisions, MLSERVER, window)

    def describe(self) -> dict[str, Any]:
        """The run metadata / CLI description, plus where the Model lives and its API.

        Returns:
            A JSON-able dict.
        """
        return {**super().describe(), "seldon_api": self.config.seldon_api}


__all__ = ["SeldonDeploymentConfig", "SeldonDeploymentService", "SeldonDeploymentStatus"]

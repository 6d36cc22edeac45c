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

from pydantic import Field, field_validator
from zenml.enums import ServiceState
from zenml.models.v2.misc.service import ServiceType

from zenml_model_deployers.config import DeploymentConfig
from zenml_model_deployers.errors import ConfigurationError, DeploymentError
from zenml_model_deployers.flavors.seldon import manifests
from zenml_model_deployers.flavors.seldon.flavor import FLAVOR_NAME, SELDON_APIS
from zenml_model_deployers.flavors.seldon.protocol import (
    decode_seldon,
    decode_v2,
    encode_seldon,
    encode_v2,
)
from zenml_model_deployers.kube.config import KubeDeploymentConfig
from zenml_model_deployers.kube.resources import (
    LABEL_CONFIG_HASH,
    ResourceKind,
    Verdict,
    config_annotation,
    ownership_labels,
)
from zenml_model_deployers.kube.service import KubeDeploymentService, KubeDeploymentStatus
from zenml_model_deployers.kube.v2protocol import EXAMPLE_V2_BODY
from zenml_model_deployers.remote import BackendState, ServingTarget
from zenml_model_deployers.service import RevisionMetrics

# Model conditions whose False status with these reasons means the load failed for good.
FAILED_REASONS = ("ModelFailed", "LoadFailed", "ScheduleFailed", "ModelFailedToLoad")


class SeldonDeploymentConfig(KubeDeploymentConfig):
    """How to serve a model on Seldon.

    Attributes:
        model_uri: the model's storage URI (``gs://``, ``s3://``, a path the servers read):
            a folder in the layout of the runtime (e.g. ``model.joblib`` for sklearn).
        seldon_api: ``v2`` (Core 2 ``Model``) or ``v1`` (Core 1 ``SeldonDeployment``).
        requirements: Core 2: capabilities a server needs to load it (e.g. ``sklearn``).
        replicas: replicas of the model.
        memory: memory the model needs (e.g. ``100Ki``), for scheduling.
        server: the Core 2 ``Server`` to load it on (None: Seldon picks by requirements).
        parameters: Core 2 model parameters (name -> value).
        storage_secret: a ZenML secret's name: its keys become the Kubernetes Secret the server
            reads storage with (never the values in this config).
        implementation: Core 1: the prepackaged server (SKLEARN_SERVER, MLFLOW_SERVER,
            XGBOOST_SERVER, TENSORFLOW_SERVER, TRITON_SERVER), unless ``image`` is set.
        image: Core 1: a custom model server image instead of a prepackaged server.
        protocol: Core 1: ``seldon`` (``/api/v1.0/predictions``) or ``v2`` (Open Inference).
        namespace: the Kubernetes namespace (default: the component's).
        kubernetes_context: kubeconfig context (default: the component's).
        kubeconfig: kubeconfig path (default: the component's).
        in_cluster: use the pod's service account.
        connector_id: a ZenML Kubernetes service connector (set from the component).
        base_url: the Seldon inference endpoint (default: the component's).
        prometheus_url: a Prometheus scraping the model servers (default: the component's).
        prometheus_token: its bearer token, a ZenML secret reference (default: the
            component's).
    """

    health_path: str = "/v2/health/ready"
    seldon_api: str = "v2"
    requirements: list[str] = Field(default_factory=lambda: ["sklearn"])
    replicas: int = Field(default=1, ge=1)
    memory: str | None = None
    server: str | None = None
    parameters: dict[str, str] = Field(default_factory=dict)
    implementation: str = "SKLEARN_SERVER"
    image: str | None = None
    protocol: str = "seldon"

    @field_validator("seldon_api")
    @classmethod
    def _known_api(cls, v: str) -> str:
        if v not in SELDON_APIS:
            raise ValueError(f"seldon_api {v!r} must be 'v2' or 'v1'.")
        return v

    @field_validator("implementation")
    @classmethod
    def _known_server(cls, v: str) -> str:
        if v not in manifests.PREPACKAGED_SERVERS:
            raise ValueError(
                f"implementation {v!r} is not a Seldon Core 1 prepackaged server: use one of "
                f"{', '.join(manifests.PREPACKAGED_SERVERS)}, or set `image` for a custom one."
            )
        return v

    @field_validator("protocol")
    @classmethod
    def _known_protocol(cls, v: str) -> str:
        if v not in manifests.PROTOCOLS:
            raise ValueError(f"protocol {v!r} must be 'seldon' or 'v2'.")
        return v


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


def _conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {str(c.get("type")): c for c in (obj.get("status") or {}).get("conditions") or [] if c}


def observed(obj: dict[str, Any]) -> bool:
    """Whether the controller has processed the object's latest spec.

    A real API server counts ``metadata.generation``; when it or ``observedGeneration`` is
    absent (an emulator), the conditions are taken as current.

    Args:
        obj: the object.

    Returns:
        True if its status describes its spec.
    """
    gen = (obj.get("metadata") or {}).get("generation")
    seen = (obj.get("status") or {}).get("observedGeneration")
    if gen is None or seen is None:
        return True
    return int(seen) >= int(gen)


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
    conds = _conditions(obj)
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


class SeldonDeploymentService(KubeDeploymentService):
    """A model on Seldon Core 2: one ``Model`` named after the deployment."""

    SERVICE_TYPE: ClassVar[ServiceType] = ServiceType(
        name="zmd-seldon-deployment",
        type="model-serving",
        flavor=FLAVOR_NAME,
        description="Seldon Core model managed by zenml-model-deployers",
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
        return manifests.SELDON_DEPLOYMENT if self.core1 else manifests.MODEL

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
        return f"{prefix}/v2/models/{manifests.GRAPH_NAME}/infer"

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
            kinds = [manifests.MODEL] + ([manifests.EXPERIMENT] if candidate else [])
            ns.check_ready(kinds)
            # A name someone else's Model holds is refused before anything of ours is made.
            ns.get_owned(manifests.MODEL, self.resource_name)
        self._apply_storage_secret(cfg)
        revision = self.status.revision + (1 if cfg.config_hash() != self.status.config_hash else 0)
        self._ensure_model(self.resource_name, cfg, revision, "main")
        keep = {self.resource_name}
        if candidate is not None:
            assert isinstance(candidate, SeldonDeploymentConfig)
            cname = manifests.candidate_name(self.deployment_name, candidate.config_hash())
            keep.add(cname)
            self._ensure_model(cname, candidate, revision + 1, "candidate")
            self._ensure_experiment(cname, target.candidate_percent, cfg)
        else:
            if ns.get_owned(manifests.EXPERIMENT, self.resource_name) is not None:
                ns.delete(manifests.EXPERIMENT, self.resource_name)
        for obj in ns.list_owned(manifests.MODEL):
            if obj["metadata"]["name"] not in keep:
                ns.delete(manifests.MODEL, obj["metadata"]["name"])
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
            ns.check_ready([manifests.SELDON_DEPLOYMENT])
            ns.get_owned(manifests.SELDON_DEPLOYMENT, self.resource_name)
        self._apply_storage_secret(cfg)
        candidate = target.candidate if target.candidate_percent else None
        spec = manifests.seldon_deployment_spec(
            self.resource_name,
            cfg,
            candidate,  # type: ignore[arg-type]
            target.candidate_percent,
            stopped=stopped,
        )
        revision = self.status.revision + (1 if cfg.config_hash() != self.status.config_hash else 0)
        labels = ownership_labels(self.deployment_name, revision, cfg.config_hash())
        annotations = config_annotation(cfg.model_dump(mode="json"))
        existing = ns.get_owned(manifests.SELDON_DEPLOYMENT, self.resource_name)
        if existing is None:
            ns.create(
                manifests.SELDON_DEPLOYMENT,
                {
                    "apiVersion": manifests.SELDON_DEPLOYMENT.api_version,
                    "kind": manifests.SELDON_DEPLOYMENT.kind,
                    "metadata": {
                        "name": self.resource_name,
                        "namespace": ns.namespace,
                        "labels": labels,
                        "annotations": annotations,
                    },
                    "spec": spec,
                },
            )
        else:
            current = existing.get("spec") or {}
            same = all(current.get(k) == v for k, v in spec.items())
            if (
                not same
                or (existing["metadata"].get("labels") or {}).get(LABEL_CONFIG_HASH)
                != cfg.config_hash()
            ):
                ns.merge_patch(
                    manifests.SELDON_DEPLOYMENT,
                    self.resource_name,
                    {"metadata": {"labels": labels, "annotations": annotations}, "spec": spec},
                )
        self.status.namespace = ns.namespace
        self.status.url = base_url

    def _ensure_model(
        self, name: str, cfg: SeldonDeploymentConfig, revision: int, role: str
    ) -> None:
        """Creates the Model, or patches it when its spec or revision labels differ."""
        ns = self.kube()
        labels = ownership_labels(self.deployment_name, revision, cfg.config_hash(), role)
        annotations = config_annotation(cfg.model_dump(mode="json"))
        spec = manifests.model_spec(cfg)
        existing = ns.get_owned(manifests.MODEL, name)
        if existing is None:
            ns.create(
                manifests.MODEL,
                manifests.model_manifest(name, ns.namespace, cfg, labels, annotations),
            )
            return
        current = existing.get("spec") or {}
        meta_labels = (existing.get("metadata") or {}).get("labels") or {}
        same_spec = all(current.get(k) == v for k, v in spec.items()) and not any(
            k in current for k in manifests.MODEL_FIELDS if k not in spec
        )
        if same_spec and meta_labels.get(LABEL_CONFIG_HASH) == cfg.config_hash():
            return
        ns.merge_patch(
            manifests.MODEL,
            name,
            manifests.merge_patch_for(
                spec,
                {k: v for k, v in current.items() if k in manifests.MODEL_FIELDS},
                {"labels": labels, "annotations": annotations},
            ),
        )

    def _ensure_experiment(
        self, candidate: str, percent: int, stable: SeldonDeploymentConfig
    ) -> None:
        """Creates or patches the Experiment that splits the model's traffic."""
        ns = self.kube()
        spec = manifests.experiment_spec(self.resource_name, candidate, percent)
        labels = ownership_labels(
            self.deployment_name, self.status.revision, stable.config_hash(), "experiment"
        )
        existing = ns.get_owned(manifests.EXPERIMENT, self.resource_name)
        if existing is None:
            ns.create(
                manifests.EXPERIMENT,
                {
                    "apiVersion": manifests.EXPERIMENT.api_version,
                    "kind": manifests.EXPERIMENT.kind,
                    "metadata": {
                        "name": self.resource_name,
                        "namespace": ns.namespace,
                        "labels": labels,
                    },
                    "spec": spec,
                },
            )
        elif existing.get("spec") != spec:
            ns.merge_patch(
                manifests.EXPERIMENT,
                self.resource_name,
                {"spec": spec, "metadata": {"labels": labels}},
            )

    def _apply_storage_secret(self, cfg: SeldonDeploymentConfig) -> None:
        if not cfg.storage_secret:
            return
        from zenml_model_deployers.kube.secrets import apply_secret, zenml_secret_values

        apply_secret(
            self.kube(),
            manifests.secret_name(self.deployment_name),
            zenml_secret_values(cfg.storage_secret),
            ownership_labels(self.deployment_name, 0, "", role="storage"),
        )

    def read_backend(self) -> BackendState:
        """Reads the deployment's Models and Experiment.

        Returns:
            Its state, in Seldon's words (failed if a Model it owns failed to load).
        """
        ns = self.kube()
        if self.core1:
            return self._read_v1()
        main = ns.get(manifests.MODEL, self.resource_name)
        if main is None:
            return BackendState(state="Absent", gone=True)
        models = {o["metadata"]["name"]: o for o in ns.list_owned(manifests.MODEL)}
        models[self.resource_name] = main
        experiment = ns.get_owned(manifests.EXPERIMENT, self.resource_name)
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
        obj = self.kube().get(manifests.SELDON_DEPLOYMENT, self.resource_name)
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
            cname = manifests.candidate_name(self.deployment_name, candidate.config_hash())
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
            want = manifests.experiment_spec(self.resource_name, cname, target.candidate_percent)
            if experiment is None or experiment.get("spec") != want:
                return False
        return self._mesh_ready()

    def _serves_v1(self, obj: dict[str, Any], target: ServingTarget) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        if labels.get(LABEL_CONFIG_HASH) != target.stable.config_hash():
            return False
        want = manifests.seldon_deployment_spec(
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
        import requests

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
        url = f"{self._require_base_url()}{path}"
        try:
            r = self._http().get(url, headers=headers, timeout=5)
        except requests.RequestException:
            return False
        return bool(r.status_code == 200)

    # ----------------------------------------------------------------- lifecycle hooks
    def start_backend(self, timeout: float) -> None:
        """Loads the recorded revision (and canary) again: same name, same URL; blocks until
        it serves.

        Args:
            timeout: seconds.
        """
        target = self.live_target() or ServingTarget(stable=self.config)
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
        self.status.stopped = True
        self.admin_state = ServiceState.INACTIVE
        self.status.update_state(ServiceState.INACTIVE, "stopped (the Model is unloaded)")

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
        if ns.get_owned(manifests.SELDON_DEPLOYMENT, self.resource_name) is None:
            return
        target = self.live_target() or ServingTarget(stable=self.config)
        self._apply_v1(target, target, stopped=True)
        ns.wait_for(
            manifests.SELDON_DEPLOYMENT,
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
        from zenml_model_deployers.kube.secrets import delete_owned_secrets

        # The Secrets go even when a wait fails: nothing of ours may outlive a delete.
        try:
            if self._delete_objects(timeout, "deleted") and self.config.base_url:
                self._wait_mesh_forgets(timeout)
        finally:
            delete_owned_secrets(self.kube())

    def _delete_objects(self, timeout: float, what: str) -> bool:
        """Deletes our objects of the deployment and waits until they are gone.

        Returns:
            Whether a Model (Core 2) or SeldonDeployment (Core 1) of ours was deleted, i.e.
            whether the mesh serves a name of ours that it must now forget. A Model of that name
            we do not own stays, serving: nothing of ours is to wait for then.
        """
        ns = self.kube()
        deleted = False
        if ns.get_owned(manifests.SELDON_DEPLOYMENT, self.resource_name) is not None:
            ns.delete_and_wait(manifests.SELDON_DEPLOYMENT, self.resource_name, timeout, what)
            deleted = True
        if self.core1:
            return deleted
        if ns.get_owned(manifests.EXPERIMENT, self.resource_name) is not None:
            ns.delete(manifests.EXPERIMENT, self.resource_name)
        for obj in ns.list_owned(manifests.MODEL):
            ns.delete_and_wait(manifests.MODEL, obj["metadata"]["name"], timeout, what)
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
            v1 = sdep_verdict(obj)
            if v1.done:
                return ServiceState.ACTIVE, ""
            if v1.failed:
                return ServiceState.ERROR, f"Seldon: {v1.reason}"
            return ServiceState.PENDING_STARTUP, f"Seldon: {v1.reason}"
        if obj is None:
            if self.status.stopped:
                return ServiceState.INACTIVE, "stopped (the Model is unloaded)"
            return ServiceState.ERROR, "the Model does not exist (deleted outside zmd?)"
        verdict = model_verdict(obj)
        if verdict.done:
            return ServiceState.ACTIVE, ""
        if verdict.failed:
            return ServiceState.ERROR, f"Seldon: {verdict.reason}"
        return ServiceState.PENDING_STARTUP, f"Seldon: {verdict.reason}"

    def status_lines(self, obj: dict[str, Any]) -> Iterator[str]:
        """The Model's conditions, one line each, or the SeldonDeployment's state
        (``get_logs`` then shows the model servers' pod logs).

        Args:
            obj: the Model or SeldonDeployment.

        Yields:
            Lines.
        """
        if self.core1:
            status = obj.get("status") or {}
            yield (
                f"[{manifests.SELDON_DEPLOYMENT.kind} {self.resource_name}] "
                f"state={status.get('state')} {status.get('description') or ''}".rstrip()
            )
            return
        for cond in _conditions(obj).values():
            yield (
                f"[Model {self.resource_name}] {cond.get('type')}={cond.get('status')} "
                f"{cond.get('reason') or ''} {cond.get('message') or ''}".rstrip()
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
        from zenml_model_deployers.kube.prometheus import client_for, version_matcher

        prom = client_for(self.config, self.FLAVOR, "the model servers")
        if self.core1:
            raise ConfigurationError(
                f"Flavor {self.FLAVOR} reads request metrics per revision only for Seldon "
                f"Core 2 (deployment '{self.deployment_name}' is Core 1).",
                deployment_name=self.deployment_name,
                hint="deploy with seldon_api='v2', or without policy='canary'.",
            )
        live = self.live_target() or ServingTarget(stable=self.config)
        revisions: list[tuple[DeploymentConfig, str]] = [(live.stable, self.resource_name)]
        if live.candidate is not None:
            cname = manifests.candidate_name(self.deployment_name, live.candidate.config_hash())
            revisions.append((live.candidate, cname))
        out = {}
        for cfg, model in revisions:
            h = cfg.config_hash()
            out[h] = prom.revision_metrics(h, version_matcher("model", model), window=window)
        return out

    def describe(self) -> dict[str, Any]:
        """The run metadata / CLI description, plus where the Model lives.

        Returns:
            A JSON-able dict.
        """
        d = super().describe()
        d["namespace"] = self.status.namespace or self.config.namespace
        d["seldon_api"] = self.config.seldon_api
        kind = self.resource_kind()
        d["resource"] = f"{kind.plural}.{kind.group}/{self.resource_name}"
        return d

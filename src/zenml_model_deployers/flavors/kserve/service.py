"""A model served by KServe: one ``InferenceService`` per deployment, updated in place.

The URL is the InferenceService's (``status.url``), the same for every revision; with the
component's ``base_url`` (the ingress gateway) requests go there with the InferenceService's
``Host``, as KServe's docs show where DNS is not set up. An update patches the same
InferenceService: KServe rolls it (the old revision serves until the new one is ready), and a
revision that fails is rolled back by patching the previous spec again (the shared loop of
``remote.InPlaceDeploymentService``).

Canaries follow the cluster's deployment mode (``status.deploymentMode``):

- Serverless: ``spec.predictor.canaryTrafficPercent`` on the new spec; KServe splits between
  the new revision and the previous rolled-out one. Promote drops the field; rollback pins 0 %
  on the new revision first (all traffic back on the previous rolled-out revision at once),
  then puts the stable spec back.
- Standard (RawDeployment): KServe ignores ``canaryTrafficPercent`` (kserve#5335), so the
  candidate goes in ``spec.canary`` (KServe >= 0.20); where the CRD has no such field the
  canary is refused before anything changes.

``kubernetes`` is imported only when a method talks to the cluster.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar
from urllib.parse import urlparse

from pydantic import PrivateAttr
from zenml.enums import ServiceState
from zenml.models.v2.misc.service import ServiceType

from zenml_model_deployers.config import DeploymentConfig
from zenml_model_deployers.errors import ConfigurationError, DeploymentError, PredictionError
from zenml_model_deployers.flavors.kserve import backend
from zenml_model_deployers.flavors.kserve.backend import INFERENCE_SERVICE, is_serverless
from zenml_model_deployers.flavors.kserve.config import KServeDeploymentConfig
from zenml_model_deployers.flavors.kserve.flavor import FLAVOR_NAME
from zenml_model_deployers.kube.objects import (
    LABEL_CONFIG_HASH,
    ResourceKind,
    Verdict,
    patch_changes_nothing,
)
from zenml_model_deployers.kube.service import (
    KubeDeploymentService,
    KubeDeploymentStatus,
)
from zenml_model_deployers.kube.v2protocol import EXAMPLE_V2_BODY
from zenml_model_deployers.metrics import RevisionMetrics
from zenml_model_deployers.remote import BackendState, ServingTarget
from zenml_model_deployers.service import serving_type

OPENAI_CHAT_PATH = "/openai/v1/chat/completions"


class KServeDeploymentStatus(KubeDeploymentStatus):
    """What the cluster last said about the deployment.

    Attributes:
        namespace: where the InferenceService is (set once created).
        stopped: stopped by ``stop`` (the ``serving.kserve.io/stop`` annotation).
        host: the InferenceService's host (from ``status.url``).
        deployment_mode: KServe's ``status.deploymentMode`` (Serverless, Standard, ...).
        rolled_out_revision: Serverless: the revision serving the stable revision (KServe's
            ``latestRolledoutRevision``), which a canary's remaining traffic must go to.
        kserve_state: the last state read (Ready, Progressing, Failed, Stopped).
        kserve_message: KServe's last message.
    """

    host: str = ""
    deployment_mode: str = ""
    rolled_out_revision: str = ""
    kserve_state: str = ""
    kserve_message: str = ""


class KServeDeploymentService(KubeDeploymentService):
    """A model on KServe: one ``InferenceService`` named after the deployment."""

    SERVICE_TYPE: ClassVar[ServiceType] = serving_type(
        FLAVOR_NAME, "KServe InferenceService managed by zenml-model-deployers"
    )
    FLAVOR: ClassVar[str] = FLAVOR_NAME
    BACKEND: ClassVar[str] = "KServe"

    config: KServeDeploymentConfig
    status: KServeDeploymentStatus

    # The bound of the waits inside one apply (the rollback's pin), from the caller's timeout.
    _apply_timeout: float = PrivateAttr(default=300.0)

    # ----------------------------------------------------------------- helpers
    def resource_kind(self) -> ResourceKind:
        """The InferenceService (named after the deployment).

        Returns:
            Its kind.
        """
        return INFERENCE_SERVICE

    @property
    def is_llm(self) -> bool:
        """Whether the deployment runs KServe's Hugging Face server (OpenAI routes)."""
        return self.config.model_format == "huggingface"

    def predict_path(self) -> str:
        """V1 ``/v1/models/{name}:predict``, V2 ``/v2/models/{name}/infer``, or the Hugging Face
        server's OpenAI chat route ``/openai/v1/chat/completions``.

        Returns:
            The path.
        """
        if self.is_llm:
            return OPENAI_CHAT_PATH
        if self.config.protocol == "v2":
            return f"/v2/models/{self.resource_name}/infer"
        return f"/v1/models/{self.resource_name}:predict"

    @property
    def healthcheck_url(self) -> str | None:
        """The model's readiness URL (V1 ``/v1/models/{name}``, V2 ``.../ready``)."""
        return f"{self.status.url}{self._health_path()}" if self.status.url else None

    def _health_path(self) -> str:
        if self.config.protocol == "v2" and not self.is_llm:
            return f"/v2/models/{self.resource_name}/ready"
        return f"/v1/models/{self.resource_name}"

    def _host_headers(self) -> dict[str, str]:
        """The InferenceService's ``Host`` when requests go through the ingress gateway."""
        if self.config.base_url and self.status.host:
            return {"Host": self.status.host}
        return {}

    def format_request(self, data: Any) -> tuple[dict[str, str], bytes]:
        """A V1 (``{"instances": rows}``), V2, or OpenAI chat request, with the
        InferenceService's ``Host`` when going through the ingress.

        Args:
            data: a DataFrame, ndarray, list of rows, a ready request dict; for an LLM a
                prompt string, chat messages or an OpenAI request dict.

        Returns:
            (headers, body).
        """
        from zenml_model_deployers.flavors.kserve.protocol import encode

        headers = {"Content-Type": "application/json", **self._host_headers()}
        return headers, json.dumps(encode(data, self.protocol_name)).encode()

    @property
    def protocol_name(self) -> str:
        """``openai``, ``v1`` or ``v2``."""
        return "openai" if self.is_llm else self.config.protocol

    def parse_response(self, body: bytes) -> Any:
        """The predictions of a V1/V2 response, or an LLM's answer text.

        Args:
            body: the response body.

        Returns:
            A list (one entry per row for a single-column output), or text.

        Raises:
            PredictionError: an answer in no known shape.
        """
        from zenml_model_deployers.flavors.kserve.protocol import decode

        try:
            return decode(json.loads(body), self.protocol_name)
        except ValueError as e:
            raise PredictionError(
                f"Deployment '{self.deployment_name}' answered in an unexpected shape: {e}",
                deployment_name=self.deployment_name,
                backend_message=body[:2000].decode(errors="replace"),
            ) from e

    def predict(self, data: Any, timeout: float = 60.0, **params: Any) -> Any:
        """Sends data to the model and returns its predictions (an LLM: the answer's text).

        Args:
            data: see :meth:`format_request`.
            timeout: seconds.
            **params: LLMs only: OpenAI request fields (e.g. ``max_tokens=32``).

        Returns:
            The predictions.
        """
        if params and self.is_llm:
            from zenml_model_deployers.flavors.kserve.protocol import encode

            body = {**encode(data, "openai"), **params}
            headers = {"Content-Type": "application/json", **self._host_headers()}
            url = self.prediction_url
            if not url:
                return super().predict(data, timeout)
            return self._send(url, headers, json.dumps(body).encode(), timeout)
        return super().predict(data, timeout)

    def curl_example(self) -> str:
        """A request in the deployment's protocol (with the ``Host`` through an ingress).

        Returns:
            A curl command line.
        """
        url = self.prediction_url or "(not deployed)"
        host = "".join(f" -H '{k}: {v}'" for k, v in self._host_headers().items())
        if self.is_llm:
            body = '{"messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 32}'
        elif self.config.protocol == "v2":
            body = EXAMPLE_V2_BODY
        else:
            body = '{"instances": [[0.1, 0.2, 0.3, 0.4]]}'
        return f"curl -s -X POST {url} -H 'Content-Type: application/json'{host} -d '{body}'"

    # ----------------------------------------------------------------- spec
    def _mode(self, cfg: KServeDeploymentConfig) -> str:
        """The deployment mode that applies: the config's, else what KServe reported."""
        mode = cfg.deployment_mode or self.status.deployment_mode or ""
        return "Standard" if mode == "RawDeployment" else mode

    def desired_spec(self, target: ServingTarget, canary_pin: bool = False) -> dict[str, Any]:
        """The InferenceService's spec for a target.

        Args:
            target: what to serve.
            canary_pin: Serverless only: the stable spec with ``canaryTrafficPercent: 0``
                (traffic stays on the previous rolled-out revision; the way out of a canary).

        Returns:
            The spec.

        Raises:
            ConfigurationError: a canary in a mode that cannot run one.
        """
        stable = target.stable
        candidate = target.candidate if target.candidate_percent else None
        assert isinstance(stable, KServeDeploymentConfig)
        assert candidate is None or isinstance(candidate, KServeDeploymentConfig)
        mode = self._mode(stable)
        if candidate is not None and not mode:
            raise ConfigurationError(
                f"KServe has not reported the deployment mode of '{self.deployment_name}' "
                "(status.deploymentMode): a canary needs it.",
                deployment_name=self.deployment_name,
                hint="set the component's or the step's `deployment_mode`.",
            )
        return backend.inference_service_spec(
            stable, candidate, target.candidate_percent, mode, canary_pin
        )

    # ----------------------------------------------------------------- in-place hooks
    def apply_target(self, target: ServingTarget, previous: ServingTarget | None) -> None:
        """Creates or merge-patches the InferenceService to serve ``target``.

        Leaving a Serverless canary for the stable revision (rollback) first pins the canary
        at 0 % on the stable spec, so no request reaches the candidate while KServe rolls the
        stable spec out again; then drops the pin.

        Args:
            target: what to serve.
            previous: what served until now (None: create).

        Raises:
            ConfigurationError: a mode change in place, or a canary the cluster cannot run.
        """
        cfg = target.stable
        assert isinstance(cfg, KServeDeploymentConfig)
        ns = self.kube()
        if previous is not None:
            before = previous.stable
            assert isinstance(before, KServeDeploymentConfig)
            if (before.deployment_mode or None) != (cfg.deployment_mode or None):
                raise ConfigurationError(
                    f"Deployment '{self.deployment_name}' runs in deployment mode "
                    f"'{before.deployment_mode or 'the cluster default'}': KServe cannot move it "
                    f"to '{cfg.deployment_mode or 'the cluster default'}' in place.",
                    deployment_name=self.deployment_name,
                    hint="deploy with policy='replace' (delete, then create), or another name.",
                )
        existing = ns.get_owned(INFERENCE_SERVICE, self.resource_name)
        if existing is None:
            ns.check_ready([INFERENCE_SERVICE])
        storage = self.apply_storage_secret(cfg)
        if storage is not None:
            from zenml_model_deployers.kube.secrets import apply_service_account, storage_labels

            # KServe's storage initializer reads credentials from the predictor's
            # ServiceAccount (named as the Secret it carries).
            apply_service_account(ns, storage, storage, storage_labels(self.deployment_name))
        leaving_canary = (
            previous is not None
            and previous.candidate is not None
            and previous.candidate_percent > 0
            and not target.candidate_percent
            and previous.candidate.config_hash() != cfg.config_hash()
            and is_serverless(self._mode(cfg))
        )
        if leaving_canary and existing is not None:
            self._write(existing, self.desired_spec(target, canary_pin=True), cfg)
            if self.restoring_after_interruption:
                return
            self.kube().wait_for(
                INFERENCE_SERVICE,
                self.resource_name,
                backend.pinned_verdict,
                self._apply_timeout,
                f"InferenceService '{self.resource_name}' to pin the canary at 0 %",
            )
            existing = ns.get_owned(INFERENCE_SERVICE, self.resource_name)
        spec = self.desired_spec(target)
        if target.candidate_percent and not is_serverless(self._mode(cfg)):
            self._check_canary_field(existing, spec)
        self._write(existing, spec, cfg)
        self.status.namespace = ns.namespace

    def _write(
        self, existing: dict[str, Any] | None, spec: dict[str, Any], cfg: KServeDeploymentConfig
    ) -> None:
        """Creates the InferenceService, or patches what differs (nothing: no request)."""
        labels, config = self.revision_metadata(cfg, self.next_revision(cfg))
        annotations = backend.isvc_annotations(config, cfg.deployment_mode, stopped=False)
        backend.write(self.kube(), self.resource_name, existing, spec, labels, annotations)

    def _check_canary_field(self, existing: dict[str, Any] | None, spec: dict[str, Any]) -> None:
        """Standard mode: ``spec.canary`` exists only in KServe >= 0.20's CRD. A server-side dry
        run shows whether the API server keeps it (an older CRD rejects or prunes it);
        nothing is changed either way."""
        if existing is None:
            return
        patch = {"spec": backend.spec_patch(spec, existing.get("spec") or {})}
        refusal = backend.canary_refusal(self.kube(), self.resource_name, patch)
        if refusal:
            raise ConfigurationError(
                f"Deployment '{self.deployment_name}' runs in KServe's "
                f"{self._mode(self.config)} mode, which ignores canaryTrafficPercent "
                "(kserve#5335), and this cluster's InferenceService CRD has no spec.canary "
                "(KServe >= 0.20): a canary cannot run here.",
                deployment_name=self.deployment_name,
                backend_message=refusal,
                hint="upgrade KServe to 0.20 or later, use Serverless mode, or deploy without "
                "canary_percent (the update rolls out in place).",
            )

    def read_backend(self) -> BackendState:
        """Reads the InferenceService (one GET).

        Returns:
            Its state in KServe's words (failed when the current spec's rollout failed).
        """
        obj = self.kube().get(INFERENCE_SERVICE, self.resource_name)
        if obj is None:
            return BackendState(state="Absent", gone=True)
        self._record_status(obj)
        state, message, failed = backend.read_state(obj)
        self.status.kserve_state = state
        self.status.kserve_message = message
        status = obj.get("status") or {}
        url = self.config.base_url.rstrip("/") or str(status.get("url") or "") or None
        return BackendState(state=state, message=message, failed=failed, url=url, raw=obj)

    def _record_status(self, obj: dict[str, Any]) -> None:
        status = obj.get("status") or {}
        if status.get("url"):
            self.status.host = urlparse(str(status["url"])).netloc
        if status.get("deploymentMode"):
            mode = str(status["deploymentMode"])
            self.status.deployment_mode = "Standard" if mode == "RawDeployment" else mode

    def serves(self, state: BackendState, target: ServingTarget) -> bool:
        """Ready for the current generation, with the target's spec and traffic, and the
        model answers its readiness request.

        Args:
            state: the state read.
            target: what should serve.

        Returns:
            True when requests reach the target.
        """
        if state.state != "Ready":
            return False
        obj: dict[str, Any] = state.raw or {}
        labels = (obj.get("metadata") or {}).get("labels") or {}
        if labels.get(LABEL_CONFIG_HASH) != target.stable.config_hash():
            return False
        current = obj.get("spec") or {}
        if not patch_changes_nothing(
            current, backend.spec_patch(self.desired_spec(target), current)
        ):
            return False
        pct = target.candidate_percent if target.candidate is not None else 0
        serverless = is_serverless(self._mode(self.config))
        if not backend.traffic_as_wanted(obj, serverless, pct, self.status.rolled_out_revision):
            return False
        if serverless and not pct:
            self.status.rolled_out_revision = backend.predictor_status(obj)["latestReadyRevision"]
        return self._model_ready()

    def _model_ready(self) -> bool:
        """The readiness request through the URL: the model server says the model is ready."""
        url = self.healthcheck_url
        return bool(url) and self.answers_ready(str(url), self._host_headers())

    def roll_out(
        self, target: ServingTarget, previous: ServingTarget | None, timeout: float, what: str
    ) -> BackendState:
        """The base's rollout (update or traffic split, with wait and rollback); the waits
        inside one apply (a Serverless rollback's pin) are bounded by the same timeout.

        Args:
            target: what to serve.
            previous: what served until now (None: a new deployment).
            timeout: seconds.
            what: what is done, for messages.

        Returns:
            The state that serves ``target``.
        """
        self._apply_timeout = timeout
        return super().roll_out(target, previous, timeout, what)

    # ----------------------------------------------------------------- lifecycle hooks
    def start_backend(self, timeout: float) -> None:
        """Removes the ``serving.kserve.io/stop`` annotation: KServe brings the recorded
        revision (and canary) back under the same name and URL; blocks until it serves.

        Args:
            timeout: seconds.
        """
        target = self.serving_target()
        ns = self.kube()
        self._apply_timeout = timeout
        existing = ns.get_owned(INFERENCE_SERVICE, self.resource_name)
        serverless_canary = bool(target.candidate_percent) and is_serverless(
            self._mode(self.config)
        )
        if existing is None:
            self.apply_target(target, None)
        elif serverless_canary:
            # A stopped Serverless InferenceService comes back without its revision history,
            # so canaryTrafficPercent would have no previous rolled-out revision to split
            # with: roll the stable spec out first, then the canary beside it.
            # One patch: the stop annotation goes (`backend.isvc_annotations`) with the stable spec.
            stable = ServingTarget(stable=target.stable)
            self.apply_target(stable, None)
            self.wait_until_serving(stable, timeout, "start of the stable revision")
            self.apply_target(target, stable)
        else:
            ns.merge_patch(INFERENCE_SERVICE, self.resource_name, backend.stop_patch(False))
        self.wait_until_serving(target, timeout, "start")
        self.status.stopped = False
        self.mark_ready()

    def stop_backend(self, timeout: float) -> None:
        """Sets ``serving.kserve.io/stop: "true"``: KServe removes the predictor's workloads
        and reports the ``Stopped`` condition; the InferenceService, its URL and our record
        stay, so ``start`` brings it back on the same URL.

        Args:
            timeout: seconds to wait for ``Stopped``.
        """
        ns = self.kube()
        if ns.get_owned(INFERENCE_SERVICE, self.resource_name) is not None:
            ns.merge_patch(INFERENCE_SERVICE, self.resource_name, backend.stop_patch(True))
            ns.wait_for(
                INFERENCE_SERVICE,
                self.resource_name,
                backend.stopped_verdict,
                timeout,
                f"InferenceService '{self.resource_name}' to stop",
            )
        self.mark_stopped("stopped (serving.kserve.io/stop)")

    def delete_backend(self, timeout: float) -> None:
        """Deletes the InferenceService, its storage Secret and ServiceAccount, nothing else.

        Args:
            timeout: seconds to wait until the InferenceService is gone.
        """
        from zenml_model_deployers.kube.secrets import delete_owned

        ns = self.kube()
        # The Secret and ServiceAccount go even when the wait fails: nothing of ours may
        # outlive a delete (or the discard of a failed create).
        try:
            if ns.get_owned(INFERENCE_SERVICE, self.resource_name) is not None:
                ns.delete_and_wait(INFERENCE_SERVICE, self.resource_name, timeout, "deleted")
        finally:
            delete_owned(ns, "ServiceAccount", "Secret")
        # KServe removes the routes shortly after the InferenceService.
        self.wait_until_unserved(
            lambda: bool(self.status.url) and self._model_ready(),
            timeout,
            f"InferenceService '{self.resource_name}' was deleted but its URL still answers",
            "check the ingress (its routes for this host) and KServe's controller.",
        )

    def check_status(self) -> tuple[ServiceState, str]:
        """Reads the InferenceService (one GET).

        Returns:
            (state, message).
        """
        try:
            state = self.read_backend()
        except DeploymentError as e:
            return ServiceState.ERROR, str(e).splitlines()[0]
        if state.gone:
            return self.absent_state("stopped", "the InferenceService")
        if state.state == "Stopped":
            return ServiceState.INACTIVE, state.message
        # A failed new spec is rolled back by the deploy; the previous revision serves.
        verdict = Verdict(done=state.state == "Ready", failed=state.failed, reason=state.message)
        return self.state_from(verdict)

    def pod_selector(self) -> str:
        """The predictor pods (KServe labels them with the InferenceService's name).

        Returns:
            The selector.
        """
        return f"serving.kserve.io/inferenceservice={self.resource_name}"

    def read_revision_metrics(self, window: float | None = None) -> dict[str, RevisionMetrics]:
        """Requests, failures and latency per revision, from the Prometheus configured on the
        component (``prometheus_url``), which scrapes Knative's queue-proxies: every
        predictor pod's ``revision_request_count`` (5xx = failed) and
        ``revision_request_latencies`` (ms), labelled by the Knative revision. The stable
        revision is KServe's ``latestRolledoutRevision``, the canary's candidate its
        ``latestCreatedRevision``. Serverless mode only: Standard mode has no queue-proxy,
        and its model servers label their series with the InferenceService's name, the same
        for the stable predictor and ``spec.canary``. See
        :mod:`zenml_model_deployers.kube.prometheus`.

        Args:
            window: seconds (``increase``/``histogram_quantile`` over that range); None:
                cumulative counts (the rollout differences two readings).

        Returns:
            config hash -> metrics, for the stable revision and the canary's candidate (zero
            requests where Prometheus has no data: never enough for a rollout's verdict).

        Raises:
            ConfigurationError: no ``prometheus_url``, or not in Serverless mode.
            DeploymentError: Prometheus unreachable or answering an error.
        """
        from zenml_model_deployers.kube.prometheus import (
            KNATIVE_QUEUE_PROXY,
            client_for,
            label_matcher,
        )

        prom = client_for(self.config, self.FLAVOR, "Knative's queue-proxies")
        obj = self.kube().get(INFERENCE_SERVICE, self.resource_name) or {}
        self._record_status(obj)
        mode = self._mode(self.config)
        if not is_serverless(mode):
            raise ConfigurationError(
                f"Flavor {self.FLAVOR} reads request metrics per revision only in KServe's "
                f"Serverless mode (deployment '{self.deployment_name}' is in "
                f"{mode or 'an unknown'} mode): they come from Knative's queue-proxy, "
                "which Standard mode does not run.",
                deployment_name=self.deployment_name,
                hint="deploy with deployment_mode='Serverless', or without policy='canary' "
                "(canary_percent with promote/rollback by hand works in both modes).",
            )
        pred = backend.predictor_status(obj)
        stable_rev = str(pred.get("latestRolledoutRevision") or "")
        latest_rev = str(pred.get("latestCreatedRevision") or "")
        live = self.serving_target()
        revisions: list[tuple[DeploymentConfig, str]] = [(live.stable, stable_rev)]
        if live.candidate is not None and latest_rev != stable_rev:
            revisions.append((live.candidate, latest_rev))
        # A revision KServe has not rolled out has no data, never a pass.
        matchers: list[tuple[DeploymentConfig, str | None]] = [
            (cfg, label_matcher(namespace_name=self._namespace, revision_name=rev) if rev else None)
            for cfg, rev in revisions
        ]
        return self.metrics_by_revision(prom, matchers, KNATIVE_QUEUE_PROXY, window)

    def describe(self) -> dict[str, Any]:
        """The run metadata / CLI description, plus where the InferenceService lives.

        Returns:
            A JSON-able dict.
        """
        d = super().describe()
        d["deployment_mode"] = self.status.deployment_mode or self.config.deployment_mode
        d["host"] = self.status.host
        return d


__all__ = ["KServeDeploymentConfig", "KServeDeploymentService", "KServeDeploymentStatus"]

"""A model served by a Hugging Face Inference Endpoint, updated in place.

The endpoint's URL is Hugging Face's own and stays the same across updates, pause and resume:
no local front is involved. Updates, their wait and their rollback run on
:class:`~zenml_model_deployers.remote.InPlaceDeploymentService`; this module says how an
endpoint is applied, read and paused. ``huggingface_hub`` is imported only when a method talks
to Hugging Face (see ``backend.py``), so loading these services (ZenML does it to list them)
is cheap.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Generator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, PrivateAttr
from zenml.enums import ServiceState
from zenml.models.v2.misc.service import ServiceType

from zenml_model_deployers import secrets
from zenml_model_deployers.config import DeploymentConfig
from zenml_model_deployers.errors import (
    ConfigurationError,
    DeploymentError,
    DeploymentTimeoutError,
    PredictionError,
)
from zenml_model_deployers.flavors.huggingface import config as hf_config
from zenml_model_deployers.flavors.huggingface import protocol
from zenml_model_deployers.flavors.huggingface.flavor import FLAVOR_NAME
from zenml_model_deployers.remote import BackendState, InPlaceDeploymentService, ServingTarget
from zenml_model_deployers.service import DeploymentStatus
from zenml_model_deployers.states import state_word

if TYPE_CHECKING:
    from types import ModuleType

    from zenml_model_deployers.flavors.huggingface.backend import EndpointHandle

logger = logging.getLogger(__name__)
OFFLINE_NOTE = "(not refreshed: HF_HUB_OFFLINE is set)"
MAX_EVENTS = 50
FAILED_STATES = ("failed", "updateFailed")
# Moved to config.py (issue 24); still importable here, with a warning: stored services and
# users' code name them by this module.
_MOVED = ("ENDPOINT_TYPES", "NOT_UPDATABLE", "HuggingFaceDeploymentConfig", "endpoint_name_for")


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        warnings.warn(
            f"zenml_model_deployers.flavors.huggingface.service.{name} moved to "
            f"zenml_model_deployers.flavors.huggingface.config.{name}; import it from there.",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(hf_config, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def map_state(hf_state: str, message: str, deployment_name: str) -> tuple[ServiceState, str]:
    """Maps an Inference Endpoints state onto ZenML's service states.

    Args:
        hf_state: e.g. ``running``, ``scaledToZero``.
        message: Hugging Face's status message.
        deployment_name: for the hints.

    Returns:
        (state, message). Scale-to-zero is its own state, not an error.
    """
    if hf_state == "running":
        return ServiceState.ACTIVE, ""
    if hf_state in ("pending", "initializing", "updating"):
        return ServiceState.PENDING_STARTUP, f"Hugging Face: {hf_state}" + (
            f": {message}" if message else ""
        )
    if hf_state == "paused":
        return (
            ServiceState.INACTIVE,
            f"paused; `zmd models start {deployment_name}` resumes it on the same URL",
        )
    if hf_state == "scaledToZero":
        return (
            ServiceState.SCALED_TO_ZERO,
            "scaled to zero; the next request wakes it up (after a cold start)",
        )
    if hf_state in ("failed", "updateFailed"):
        return ServiceState.ERROR, f"Hugging Face reports {hf_state}: {message}"
    return ServiceState.ERROR, f"unknown Inference Endpoints state {hf_state!r}: {message}"


class HuggingFaceDeploymentStatus(DeploymentStatus):
    """Where the endpoint is and what Hugging Face last said about it.

    Attributes:
        namespace: the endpoint's namespace (set once it exists).
        endpoint_name: the endpoint's name (set once this deployment created it).
        hf_state: the last Inference Endpoints state read.
        hf_message: Hugging Face's last status message.
        events: what happened to the endpoint, newest last (what ``get_logs`` shows).
    """

    namespace: str | None = None
    endpoint_name: str | None = None
    hf_state: str | None = None
    hf_message: str = ""
    events: list[str] = Field(default_factory=list)


class EndpointState(BackendState):
    """A read of the endpoint, with whether its health route answered (when running).

    Attributes:
        healthy: the health route answered 200.
    """

    healthy: bool = False


def _hub() -> ModuleType:
    try:
        from zenml_model_deployers.flavors.huggingface import backend
    except ImportError as e:
        raise ConfigurationError(
            f"zmd-huggingface needs huggingface_hub, which is not importable: {e}",
            hint="pip install 'zenml-model-deployers[huggingface]'.",
        ) from e
    return backend


class HuggingFaceDeploymentService(InPlaceDeploymentService):
    """A Hub model on a Hugging Face Inference Endpoint."""

    SERVICE_TYPE: ClassVar[ServiceType] = ServiceType(
        name="zmd-huggingface-deployment",
        type="model-serving",
        flavor=FLAVOR_NAME,
        description="Hugging Face Inference Endpoint managed by zenml-model-deployers",
    )
    FLAVOR: ClassVar[str] = FLAVOR_NAME
    PREDICT_PATH: ClassVar[str] = ""
    BACKEND: ClassVar[str] = "Hugging Face"
    FIRST_POLL: ClassVar[float] = 0.1
    MAX_POLL: ClassVar[float] = 5.0

    config: hf_config.HuggingFaceDeploymentConfig
    status: HuggingFaceDeploymentStatus

    _token_value: str | None = PrivateAttr(default=None)
    _client: Any = PrivateAttr(default=None)
    # What the apply in progress did: created the endpoint (a failure deletes it); and whether
    # its wait compares the served revision (not for a created or resumed endpoint, which runs
    # what it was made with: Hugging Face may name a branch's commit as its revision).
    _created: bool = PrivateAttr(default=False)
    _any_revision: bool = PrivateAttr(default=False)

    # ----------------------------------------------------------------- helpers
    def _token(self) -> str:
        """The token, resolved from its secret reference (cached in this object only)."""
        if self._token_value is None:
            ref = self.config.token
            if not ref:
                raise ConfigurationError(
                    f"Deployment '{self.deployment_name}' has no Hugging Face token reference.",
                    deployment_name=self.deployment_name,
                    hint="deploy it with a zmd-huggingface model deployer whose `token` is a "
                    "secret reference, e.g. '{{hf_token.token}}'.",
                )
            self._token_value = secrets.resolve(ref)
        return self._token_value

    def _handle(self) -> EndpointHandle:
        """The recorded endpoint's API calls."""
        assert self.status.namespace and self.status.endpoint_name
        return _hub().EndpointHandle(  # type: ignore[no-any-return]
            self.status.namespace, self.status.endpoint_name, self._token(), self.deployment_name
        )

    def _record(self, endpoint: Any) -> None:
        """Takes what Hugging Face says about the endpoint into the status."""
        raw_status = endpoint.raw.get("status", {})
        self.status.hf_state = str(endpoint.status)
        self.status.hf_message = secrets.redact(str(raw_status.get("message") or ""))
        if endpoint.url:
            self.status.url = str(endpoint.url).rstrip("/")

    def _forget_if_gone(self) -> Any:
        """Reads the recorded endpoint; forgets it when it was deleted outside zmd (the next
        apply creates it again: Hugging Face gives it a new URL).

        Returns:
            The endpoint, or None (gone, or none recorded).
        """
        if self.status.endpoint_name is None:
            return None
        endpoint = self._handle().find()
        if endpoint is None:
            self.record_event(f"{self.endpoint_label} no longer exists; creating it again")
            logger.warning("Inference Endpoint %s is gone; creating it again.", self.endpoint_label)
            self.status.endpoint_name = None
        return endpoint

    @property
    def endpoint_label(self) -> str:
        """``namespace/name`` of the endpoint (or of the one it will have)."""
        ns = self.status.namespace or self.config.namespace or "<token user>"
        return (
            f"{ns}/{self.status.endpoint_name or hf_config.endpoint_name_for(self.deployment_name)}"
        )

    # ----------------------------------------------------------------- in-place hooks
    def record_event(self, message: str) -> None:
        """Keeps what happened to the endpoint (what ``get_logs`` shows), timestamped.

        Args:
            message: one line (redacted here).
        """
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.status.events = [*self.status.events, f"{stamp} {secrets.redact(message)}"][
            -MAX_EVENTS:
        ]

    def revision_label(self, config: DeploymentConfig) -> str:
        """``repository@revision``.

        Args:
            config: a revision.

        Returns:
            The label.
        """
        assert isinstance(config, hf_config.HuggingFaceDeploymentConfig)
        return config.model_label()

    def wait_hint(self, state: BackendState, *, timed_out: bool) -> str:
        """Hugging Face's fixes: more time (GPUs start slowly), resume, or the UI's logs.

        Args:
            state: the last read.
            timed_out: the wait ran out of time.

        Returns:
            The hint.
        """
        if timed_out:
            return (
                "raise the step's `timeout` (or the component's default_timeout): endpoints on "
                "GPUs can take 10+ minutes to start."
            )
        if state.state == "paused":
            return f"`zmd models start {self.deployment_name}` resumes it."
        return (
            "fix the cause above (repository, revision, task, framework, instance); the "
            "container's logs are in the Hugging Face UI."
        )

    def updates_in_place(self) -> bool:
        """An endpoint is updated while this deployment records one (else it is created).

        Returns:
            True when an endpoint is recorded.
        """
        return self.status.endpoint_name is not None

    def apply_target(self, target: ServingTarget, previous: ServingTarget | None) -> None:
        """Creates the endpoint (none recorded) or updates it in place; a paused endpoint is
        resumed with the new revision.

        Args:
            target: what to serve (Hugging Face serves one revision: ``target.stable``).
            previous: what served until now (None: a create).
        """
        hub = _hub()
        cfg = target.stable
        assert isinstance(cfg, hf_config.HuggingFaceDeploymentConfig)
        self._created = False
        if self.status.endpoint_name is None:
            token = self._token()
            ns = cfg.namespace or hub.token_namespace(token, self.deployment_name)
            handle = hub.EndpointHandle(
                ns, hf_config.endpoint_name_for(self.deployment_name), token, self.deployment_name
            )
            endpoint = handle.create(cfg)
            self.status.namespace, self.status.endpoint_name = ns, handle.name
            self._created = self._any_revision = True
            self._record(endpoint)
            self.record_event(
                f"created Inference Endpoint {handle.label} serving {cfg.model_label()}"
            )
            return
        self._any_revision = False
        old = previous.stable if previous is not None else None
        assert old is None or isinstance(old, hf_config.HuggingFaceDeploymentConfig)
        handle = self._handle()
        if self.restoring_after_interruption:
            handle.update(cfg, old)  # one call, no wait
            return
        was_paused = str(handle.get().status) == "paused"
        endpoint = handle.update(cfg, old)
        if was_paused:
            endpoint = handle.resume()
        self._record(endpoint)
        self.record_event(
            f"updating {handle.label} in place: {old.model_label() if old else '?'} -> "
            f"{cfg.model_label()}"
        )

    def read_backend(self) -> BackendState:
        """Reads the endpoint; a running one is asked its health route too.

        Returns:
            Its state: Hugging Face's state word and message, ``failed`` on ``failed`` /
            ``updateFailed`` / ``paused`` (a wait stops), ``gone`` when it does not exist.
        """
        hub = _hub()
        handle = self._handle()
        endpoint = handle.find()
        if endpoint is None:
            return BackendState(state="missing", gone=True, message=f"{handle.label}: not found")
        state = str(endpoint.status)
        message = hub.endpoint_message(endpoint)
        healthy = False
        if state == "running" and endpoint.url:
            healthy = hub.health_ok(
                endpoint, handle.token, self.config.health_method, self.config.health_path
            )
            if not healthy:
                message = "its health route does not answer yet"
        return EndpointState(
            state=state,
            message=message,
            url=str(endpoint.url).rstrip("/") if endpoint.url else None,
            failed=state in (*FAILED_STATES, "paused"),
            raw=endpoint,
            healthy=healthy,
        )

    def serves(self, state: BackendState, target: ServingTarget) -> bool:
        """The base's hook: running, its health route answers, and set to the target's
        repository and revision (a created or resumed endpoint: whatever it runs)."""
        if not isinstance(state, EndpointState) or not state.healthy:
            return False
        cfg = target.stable
        assert isinstance(cfg, hf_config.HuggingFaceDeploymentConfig)
        return self._any_revision or bool(_hub().configured_for(state.raw, cfg))

    def record_state(self, state: BackendState) -> None:
        """Keeps Hugging Face's state, message and URL in the status.

        Args:
            state: a read.
        """
        if state.raw is not None:
            self._record(state.raw)

    def on_create_failed(self, cause: BaseException) -> None:
        """No orphan: the endpoint this create made goes away with its failure (also when a
        start creates it), and the error says so.

        Args:
            cause: what failed.

        Raises:
            DeploymentError: ``cause``'s type and words, saying nothing is left.
        """
        if not self._created or self.status.endpoint_name is None:
            return
        label = self.endpoint_label
        self.record_event(f"create failed ({type(cause).__name__}); deleting {label}")
        with contextlib.suppress(Exception):
            self._handle().delete()
        self.status.endpoint_name = None
        self.status.url = None
        if isinstance(cause, DeploymentError) and not isinstance(cause, ConfigurationError):
            raise type(cause)(
                f"{cause.args[0].splitlines()[0]} The endpoint was deleted (nothing is left).",
                deployment_name=self.deployment_name,
                backend_message=cause.backend_message,
                hint=cause.hint,
            ) from cause

    # ----------------------------------------------------------------- lifecycle hooks
    def provision_revision(self, timeout: float) -> None:
        """Creates the endpoint, or updates it in place (see the base class for guarantees).

        Refused before anything changes: offline mode, no repository, a move to another
        namespace, or a setting Inference Endpoints cannot change in place. An endpoint
        deleted outside zmd is created again.

        Args:
            timeout: seconds to wait until the endpoint runs.
        """
        _hub().check_offline()
        new = self.config
        if not new.model_uri:
            raise ConfigurationError(
                f"Deployment '{self.deployment_name}' names no repository.",
                deployment_name=self.deployment_name,
                hint="pass repository='org/model' (model_uri).",
            )
        live = self.live_target()
        if self.status.endpoint_name is not None:
            ns = self.status.namespace
            if new.namespace and new.namespace != ns:
                raise ConfigurationError(
                    f"Deployment '{self.deployment_name}' lives in namespace '{ns}'; it cannot "
                    f"move to '{new.namespace}' in place.",
                    deployment_name=self.deployment_name,
                    hint="delete it first (`zmd models delete ...`) or use another "
                    "deployment_name.",
                )
            old = live.stable if live is not None else None
            moved = (
                new.moved_settings(old)
                if isinstance(old, hf_config.HuggingFaceDeploymentConfig)
                else []
            )
            if moved:
                raise ConfigurationError(
                    f"Inference Endpoints cannot change {', '.join(moved)} of an existing "
                    f"endpoint ('{self.endpoint_label}').",
                    deployment_name=self.deployment_name,
                    hint="deploy with policy='replace' (delete, then create: the URL changes).",
                )
            self._forget_if_gone()
        updating = self.status.endpoint_name is not None
        super().provision_revision(timeout)
        if updating:
            self.record_event(f"{self.endpoint_label} serves {new.model_label()}")

    def start_backend(self, timeout: float) -> None:
        """Resumes a paused (or failed) endpoint and waits until it runs; creates it again if
        it was deleted outside zmd. A scaled-to-zero endpoint is left to wake on its next
        request.

        Args:
            timeout: seconds.
        """
        hub = _hub()
        hub.check_offline()
        target = ServingTarget(stable=self.config)
        endpoint = self._forget_if_gone()
        if endpoint is None:
            self.roll_out(target, None, timeout, f"create of {self.config.model_label()}")
            self.mark_ready()
            return
        self._record(endpoint)
        state = str(endpoint.status)
        if state == "scaledToZero":
            self.admin_state = ServiceState.ACTIVE
            self.status.update_state(*map_state(state, "", self.deployment_name))
            return
        if state in ("paused", *FAILED_STATES):
            handle = self._handle()
            handle.resume()
            self.record_event(f"resumed {handle.label}")
        self._any_revision = True
        self.wait_until_serving(target, timeout, "start")
        self.mark_ready()

    def stop_backend(self, timeout: float) -> None:
        """Pauses the endpoint (never deletes it): no cost, same URL after ``start``.

        Args:
            timeout: seconds to wait until Hugging Face reports it paused.

        Raises:
            DeploymentTimeoutError: it is not paused within ``timeout``.
        """
        if self.status.endpoint_name is None:
            self.admin_state = ServiceState.INACTIVE
            self.status.update_state(ServiceState.INACTIVE, "")
            return
        _hub().check_offline()
        self.admin_state = ServiceState.INACTIVE
        handle = self._handle()
        endpoint = handle.pause()
        if endpoint is None:
            self.status.update_state(ServiceState.INACTIVE, f"{handle.label} no longer exists")
            return
        self._record(endpoint)
        paused = self.poll_backend(lambda s: s.state == "paused", timeout)
        if paused is None:
            raise DeploymentTimeoutError(
                f"Inference Endpoint '{handle.label}' is not paused after {timeout:.0f} s (it "
                f"is {self.status.hf_state}).",
                deployment_name=self.deployment_name,
            )
        self.record_state(paused)
        self.record_event(f"paused {handle.label}")
        self.status.update_state(*map_state("paused", "", self.deployment_name))

    def delete_backend(self, timeout: float) -> None:
        """Deletes the endpoint and waits (up to ``timeout``) until it is gone. Idempotent.

        Args:
            timeout: seconds to wait for Hugging Face's asynchronous deletion.
        """
        if self.status.endpoint_name is not None:
            _hub().check_offline()
            handle = self._handle()
            handle.delete()
            # Gone before returning: policy `replace` creates one of the same name next.
            if self.poll_backend(lambda s: s.gone, timeout) is None:
                logger.warning("Inference Endpoint %s is still being deleted.", handle.label)
            self.record_event(f"deleted {handle.label}")
        self.admin_state = ServiceState.INACTIVE
        self.status.endpoint_name = None
        self.status.hf_state = None
        self.status.url = None
        self.status.update_state(ServiceState.INACTIVE, "deleted")

    def check_status(self) -> tuple[ServiceState, str]:
        """Reads the endpoint's state from Hugging Face (one API call).

        Returns:
            (state, message); scale-to-zero is ``scaled_to_zero``, not an error.
        """
        if self.status.endpoint_name is None:
            return ServiceState.INACTIVE, "no Inference Endpoint (not deployed, or deleted)"
        try:
            hub = _hub()
            if hub.offline_blocks_api():
                # Keep what was recorded (e.g. why the last update failed) and say it is old.
                recorded = (self.status.last_error or "").split(OFFLINE_NOTE)[0].rstrip()
                note = f"{recorded} {OFFLINE_NOTE}" if recorded else OFFLINE_NOTE
                return self.status.state, note
            endpoint = self._handle().find()
        except DeploymentError as e:
            return ServiceState.ERROR, secrets.redact(f"cannot read the endpoint's state: {e}")
        if endpoint is None:
            return (
                ServiceState.ERROR,
                f"Inference Endpoint {self.endpoint_label} no longer exists (deleted outside "
                f"zmd?); `zmd models start {self.deployment_name}` creates it again.",
            )
        self._record(endpoint)
        return map_state(str(endpoint.status), self.status.hf_message, self.deployment_name)

    def get_logs(self, follow: bool = False, tail: int | None = None) -> Generator[str, bool, None]:
        """Yields what happened to the endpoint (zmd's events) and its current state.

        The container's own logs are in the Hugging Face UI: ``huggingface_hub`` has no API
        for them.

        Args:
            follow: ignored (no log stream to follow).
            tail: only the last N lines.

        Yields:
            Lines (redacted).
        """
        lines = list(self.status.events)
        with contextlib.suppress(Exception):
            state, message = self.check_status()
            lines.append(
                f"now: {self.endpoint_label} is {self.status.hf_state or state_word(state)}"
                + (f" ({message})" if message else "")
            )
        if tail:
            lines = lines[-tail:]
        for line in lines:
            yield secrets.redact(line)

    # ----------------------------------------------------------------- predictions
    def predict(self, data: Any, timeout: float = 60.0, **parameters: Any) -> Any:
        """Sends data to the endpoint through ``huggingface_hub``'s ``InferenceClient``.

        The client call follows the endpoint's task (``text_classification``,
        ``text_generation``, ``feature_extraction``, ...); other tasks get a plain JSON POST
        of ``{"inputs": data}``. A list (or array, or one-column DataFrame) is a batch: one
        answer per item. A scaled-to-zero endpoint is woken up and retried within ``timeout``.

        Args:
            data: one input (a string for text tasks, a dict of keyword arguments for tasks
                such as question answering, bytes for audio/images) or a batch of them.
            timeout: seconds for the whole call, cold start included.
            **parameters: the task's parameters (e.g. ``max_new_tokens=20``).

        Returns:
            Plain Python data (lists, dicts, strings, numbers).

        Raises:
            PredictionError: the endpoint answered an error (its body is in the message).
        """
        if not self.status.url:
            raise PredictionError(
                f"Deployment '{self.deployment_name}' has no URL: it was never deployed.",
                deployment_name=self.deployment_name,
                hint="deploy it first (e.g. `zmd models recreate ...` or run the pipeline).",
            )
        hub = _hub()
        hub.check_offline()
        url, token = str(self.status.url), self._token()
        if self._client is None or self._client.model != url:
            self._client = hub.inference_client(url, token)
        return hub.predict(
            self._client,
            data,
            token=token,
            task=self.config.task,
            timeout=timeout,
            parameters=parameters,
            deployment_name=self.deployment_name,
            is_waking=self.endpoint_is_waking,
        )

    def endpoint_is_waking(self) -> bool:
        """Tells whether the endpoint is waking up (scaled to zero, or starting).

        Returns:
            True while a retry can succeed.
        """
        state, _ = self.check_status()
        return self.status.hf_state in ("scaledToZero", "initializing", "pending") or (
            state == ServiceState.SCALED_TO_ZERO
        )

    def format_request(self, data: Any) -> tuple[dict[str, str], bytes]:
        """The raw request Inference Endpoints expects: ``{"inputs": data}``, authenticated.

        Args:
            data: the inputs.

        Returns:
            (headers, body); the headers carry the token unless the endpoint is public.
        """
        headers = {"Content-Type": "application/json"}
        if self.config.endpoint_type != "public":
            headers["Authorization"] = f"Bearer {self._token()}"
        return headers, protocol.request_body(data)

    # ----------------------------------------------------------------- descriptions
    def curl_example(self) -> str:
        """A request in Inference Endpoints' format, authenticated unless public.

        Returns:
            A curl command line with ``$HF_TOKEN`` as a placeholder for the token.
        """
        url = self.prediction_url or "(not deployed)"
        auth = (
            "" if self.config.endpoint_type == "public" else ' -H "Authorization: Bearer $HF_TOKEN"'
        )
        return (
            f"curl -s -X POST {url}{auth} -H 'Content-Type: application/json' "
            '-d \'{"inputs": "..."}\''
        )

    def describe(self) -> dict[str, Any]:
        """Adds the endpoint and what Hugging Face says to the base description.

        Returns:
            A JSON-able dict.
        """
        d = super().describe()
        d.update(
            {
                "endpoint": self.endpoint_label,
                "hf_state": self.status.hf_state,
                "repository": self.config.model_uri,
                "model_revision": self.config.revision,
                "task": self.config.task,
                "status_message": self.status.last_error or self.status.hf_message,
            }
        )
        return d

    def labels(self) -> dict[str, str]:
        """Adds the endpoint's ``namespace/name``.

        Returns:
            Labels.
        """
        return {**super().labels(), "zmd_hf_endpoint": self.endpoint_label}

"""A model served by a Hugging Face Inference Endpoint, updated in place.

The endpoint's URL is Hugging Face's own and stays the same across updates, pause and resume:
no local front is involved. ``huggingface_hub`` is imported only when a method talks to
Hugging Face (see ``hub.py``), so loading these services (ZenML does it to list them) is cheap.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Generator
from datetime import UTC, datetime
from types import ModuleType
from typing import Any, ClassVar

from pydantic import ConfigDict, Field, PrivateAttr, field_validator, model_validator
from zenml.enums import ServiceState
from zenml.models.v2.misc.service import ServiceType

from zenml_model_deployers import secrets
from zenml_model_deployers.config import DeploymentConfig
from zenml_model_deployers.errors import (
    ConfigurationError,
    DeploymentError,
    DeploymentExistsError,
    PredictionError,
)
from zenml_model_deployers.flavors.huggingface.flavor import FLAVOR_NAME, reject_plain_token
from zenml_model_deployers.service import DeploymentService, DeploymentStatus
from zenml_model_deployers.states import state_word

logger = logging.getLogger(__name__)
OFFLINE_NOTE = "(not refreshed: HF_HUB_OFFLINE is set)"

ENDPOINT_TYPES = ("public", "authenticated", "private")
MAX_EVENTS = 50
# Settings Inference Endpoints cannot change on an existing endpoint.
NOT_UPDATABLE = ("vendor", "region", "endpoint_type")
TAG = "zenml-model-deployers"


def endpoint_name_for(deployment_name: str) -> str:
    """The Inference Endpoint name of a deployment (Hugging Face allows 32 characters).

    Args:
        deployment_name: a DNS-safe deployment name (up to 63 characters).

    Returns:
        The name itself when it fits, else a prefix plus a digest of the full name.
    """
    if len(deployment_name) <= 32:
        return deployment_name
    digest = hashlib.sha256(deployment_name.encode()).hexdigest()[:8]
    return f"{deployment_name[:23].rstrip('-')}-{digest}"


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


class HuggingFaceDeploymentConfig(DeploymentConfig):
    """How to serve a Hub model on an Inference Endpoint.

    Attributes:
        model_uri: the Hub repository to serve, e.g. ``distilbert/distilbert-base-uncased``.
        revision: the repository revision (pin a commit sha: a branch name compares as text,
            so a new commit on the branch is not a new revision).
        task: e.g. ``text-classification``; also picks the client call of ``predict``.
        framework: e.g. ``pytorch`` or ``custom``.
        accelerator: e.g. ``cpu`` or ``gpu``.
        instance_size: e.g. ``x2``.
        instance_type: e.g. ``intel-icl`` or ``nvidia-a10g``.
        region: e.g. ``us-east-1`` (fixed at creation).
        vendor: e.g. ``aws`` (fixed at creation).
        min_replica: replicas kept running; 0 allows scale-to-zero.
        max_replica: replicas at most.
        scale_to_zero_timeout: idle minutes before scaling to zero (needs ``min_replica=0``).
        endpoint_type: ``public``, ``authenticated`` or ``private`` (fixed at creation).
        custom_image: a container image dict (see ``huggingface_hub``'s ``custom_image``).
        namespace: where the endpoint lives (default: the component's, else the token's user).
        token: secret reference to the token (default: the component's); never a value.
        env: the container's environment; values that are secret references are sent as
            Inference Endpoints *secrets*, resolved at call time.
    """

    # Where the endpoint lives and the credentials reference say how to reach it, not what
    # it serves: changing them is not a new revision.
    PROVENANCE_FIELDS: ClassVar[frozenset[str]] = DeploymentConfig.PROVENANCE_FIELDS | {
        "namespace",
        "token",
    }
    model_config = ConfigDict(hide_input_in_errors=True)

    health_path: str = "/health"
    revision: str | None = None
    task: str | None = None
    framework: str = "pytorch"
    accelerator: str = "cpu"
    instance_size: str = "x2"
    instance_type: str = "intel-icl"
    region: str = "us-east-1"
    vendor: str = "aws"
    min_replica: int = Field(default=1, ge=0)
    max_replica: int = Field(default=1, ge=1)
    scale_to_zero_timeout: int | None = Field(default=None, ge=1)
    endpoint_type: str = "authenticated"
    custom_image: dict[str, Any] | None = None
    namespace: str = ""
    token: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _token_is_a_reference(cls, data: Any) -> Any:
        return reject_plain_token(data, "zmd-huggingface deployment")

    @field_validator("endpoint_type")
    @classmethod
    def _known_type(cls, v: str) -> str:
        if v not in ENDPOINT_TYPES:
            raise ValueError(f"endpoint_type {v!r} must be one of {', '.join(ENDPOINT_TYPES)}.")
        return v

    @model_validator(mode="after")
    def _replicas(self) -> HuggingFaceDeploymentConfig:
        if self.min_replica > self.max_replica:
            raise ValueError(
                f"min_replica ({self.min_replica}) is above max_replica ({self.max_replica})."
            )
        if self.min_replica == 0 and self.scale_to_zero_timeout is None:
            raise ValueError(
                "min_replica=0 lets the endpoint scale to zero: also set "
                "scale_to_zero_timeout (idle minutes before it does, e.g. 15)."
            )
        return self

    @property
    def repository(self) -> str:
        """The Hub repository (``model_uri``)."""
        return self.model_uri

    def plain_env(self) -> dict[str, str]:
        """The environment variables that are not secret references.

        Returns:
            A dict.
        """
        return {k: v for k, v in self.env.items() if not secrets.is_secret_reference(v)}

    def resolved_secrets(self) -> dict[str, str]:
        """The environment variables that are secret references, resolved (call time only).

        Returns:
            A dict of secret values: never log or store it.
        """
        return {
            k: secrets.resolve(v) for k, v in self.env.items() if secrets.is_secret_reference(v)
        }

    def model_label(self) -> str:
        """``repository@revision`` for messages.

        Returns:
            A string.
        """
        return f"{self.model_uri}@{self.revision or 'main'}"


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


def _status(error: Exception) -> int | None:
    """The HTTP status of an Inference Endpoints API error (None for other errors)."""
    code = getattr(error, "status_code", None)
    return code if isinstance(code, int) else None


def _hub() -> ModuleType:
    try:
        from zenml_model_deployers.flavors.huggingface import hub
    except ImportError as e:
        raise ConfigurationError(
            f"zmd-huggingface needs huggingface_hub, which is not importable: {e}",
            hint="pip install 'zenml-model-deployers[huggingface]'.",
        ) from e
    return hub


class HuggingFaceDeploymentService(DeploymentService):
    """A Hub model on a Hugging Face Inference Endpoint."""

    SERVICE_TYPE: ClassVar[ServiceType] = ServiceType(
        name="zmd-huggingface-deployment",
        type="model-serving",
        flavor=FLAVOR_NAME,
        description="Hugging Face Inference Endpoint managed by zenml-model-deployers",
    )
    FLAVOR: ClassVar[str] = FLAVOR_NAME
    PREDICT_PATH: ClassVar[str] = ""

    config: HuggingFaceDeploymentConfig
    status: HuggingFaceDeploymentStatus

    _token_value: str | None = PrivateAttr(default=None)
    _client: Any = PrivateAttr(default=None)

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

    def _event(self, message: str) -> None:
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.status.events = [*self.status.events, f"{stamp} {secrets.redact(message)}"][
            -MAX_EVENTS:
        ]

    def _where(self) -> tuple[str, str]:
        assert self.status.namespace and self.status.endpoint_name
        return self.status.namespace, self.status.endpoint_name

    def _record(self, endpoint: Any) -> None:
        """Takes what Hugging Face says about the endpoint into the status."""
        raw_status = endpoint.raw.get("status", {})
        self.status.hf_state = str(endpoint.status)
        self.status.hf_message = secrets.redact(str(raw_status.get("message") or ""))
        if endpoint.url:
            self.status.url = str(endpoint.url).rstrip("/")

    @property
    def endpoint_label(self) -> str:
        """``namespace/name`` of the endpoint (or of the one it will have)."""
        ns = self.status.namespace or self.config.namespace or "<token user>"
        return f"{ns}/{self.status.endpoint_name or endpoint_name_for(self.deployment_name)}"

    # ----------------------------------------------------------------- backend hooks
    def provision_revision(self, timeout: float) -> None:
        """Creates the endpoint, or updates it in place (see the base class for guarantees).

        On a failed or timed-out create the endpoint is deleted; on a failed update the
        endpoint is put back on the previous revision and waited for before the error is raised.

        Args:
            timeout: seconds to wait until the endpoint runs.
        """
        hub = _hub()
        hub.check_offline()
        if not self.config.model_uri:
            raise ConfigurationError(
                f"Deployment '{self.deployment_name}' names no repository.",
                deployment_name=self.deployment_name,
                hint="pass repository='org/model' (model_uri).",
            )
        if self.status.endpoint_name is None:
            self._create_endpoint(timeout)
        else:
            self._update_endpoint(timeout)
        self.status.revision += 1
        self.mark_ready()

    def _create_endpoint(self, timeout: float) -> None:
        hub = _hub()
        token = self._token()
        cfg = self.config
        ns = cfg.namespace or hub.token_namespace(token, self.deployment_name)
        name = endpoint_name_for(self.deployment_name)
        label = f"{ns}/{name}"
        try:
            with hub.hf_errors(f"Creating Inference Endpoint '{label}'", self.deployment_name):
                endpoint = hub.api().create_inference_endpoint(
                    name, namespace=ns, token=token, **hub.create_kwargs(cfg)
                )
        except DeploymentError as e:
            if _status(e) == 409:
                raise DeploymentExistsError(
                    f"An Inference Endpoint '{label}' already exists, and no zmd deployment "
                    "records it (made by hand, or left by an interrupted deploy).",
                    deployment_name=self.deployment_name,
                    backend_message=e.backend_message,
                    hint=f"delete it in the Hugging Face UI (or `hf endpoints delete {name} "
                    f"--namespace {ns}`) if it is yours to remove, or deploy under another "
                    "deployment_name.",
                ) from e
            raise
        self.status.namespace, self.status.endpoint_name = ns, name
        self._record(endpoint)
        self._event(f"created Inference Endpoint {label} serving {cfg.model_label()}")
        try:
            endpoint = hub.wait_until_running(
                self, timeout=timeout, what=f"create of {cfg.model_label()}", expect=None
            )
            self._record(endpoint)
            self._smoke()
        except BaseException as e:
            # No orphan: the endpoint this deploy created goes away with its failure.
            self._event(f"create failed ({type(e).__name__}); deleting {label}")
            with contextlib.suppress(Exception):
                hub.api().delete_inference_endpoint(name, namespace=ns, token=token)
            self.status.endpoint_name = None
            self.status.url = None
            if isinstance(e, DeploymentError) and not isinstance(e, ConfigurationError):
                raise type(e)(
                    f"{e.args[0].splitlines()[0]} The endpoint was deleted (nothing is left).",
                    deployment_name=self.deployment_name,
                    backend_message=e.backend_message,
                    hint=e.hint,
                ) from e
            raise

    def _update_endpoint(self, timeout: float) -> None:
        hub = _hub()
        token = self._token()
        ns, name = self._where()
        new = self.config
        old = type(new).model_validate(self.status.live_config) if self.status.live_config else None
        if new.namespace and new.namespace != ns:
            raise ConfigurationError(
                f"Deployment '{self.deployment_name}' lives in namespace '{ns}'; it cannot "
                f"move to '{new.namespace}' in place.",
                deployment_name=self.deployment_name,
                hint="delete it first (`zmd models delete ...`) or use another deployment_name.",
            )
        if old is not None:
            moved = [f for f in NOT_UPDATABLE if getattr(old, f) != getattr(new, f)]
            if moved:
                raise ConfigurationError(
                    f"Inference Endpoints cannot change {', '.join(moved)} of an existing "
                    f"endpoint ('{ns}/{name}').",
                    deployment_name=self.deployment_name,
                    hint="deploy with policy='replace' (delete, then create: the URL changes).",
                )
        current = self._endpoint_or_recreate(timeout)
        if current is None:
            return
        was_paused = str(current.status) == "paused"
        with hub.hf_errors(f"Updating Inference Endpoint '{ns}/{name}'", self.deployment_name):
            endpoint = hub.api().update_inference_endpoint(
                name, namespace=ns, token=token, **hub.update_kwargs(new, old)
            )
            if was_paused:
                endpoint = hub.api().resume_inference_endpoint(name, namespace=ns, token=token)
        self._record(endpoint)
        self._event(
            f"updating {ns}/{name} in place: {old.model_label() if old else '?'} -> "
            f"{new.model_label()}"
        )
        try:
            endpoint = hub.wait_until_running(
                self, timeout=timeout, what=f"update to {new.model_label()}", expect=new
            )
            self._record(endpoint)
            self._smoke()
        except Exception as e:
            if old is None:
                raise
            self._roll_back(old, timeout, e)
        except BaseException:
            # Interrupted: put the previous revision back without waiting for it.
            if old is not None:
                with contextlib.suppress(Exception):
                    hub.api().update_inference_endpoint(
                        name, namespace=ns, token=token, **hub.update_kwargs(old, new)
                    )
            raise
        self._event(f"{ns}/{name} serves {new.model_label()}")

    def _endpoint_or_recreate(self, timeout: float) -> Any:
        """The endpoint as Hugging Face reports it; None when it had been deleted outside zmd
        and was created again (Hugging Face gives it a new URL)."""
        hub = _hub()
        ns, name = self._where()
        try:
            with hub.hf_errors(f"Reading Inference Endpoint '{ns}/{name}'", self.deployment_name):
                return hub.api().get_inference_endpoint(name, namespace=ns, token=self._token())
        except DeploymentError as e:
            if _status(e) != 404:
                raise
        self._event(f"{ns}/{name} no longer exists; creating it again")
        logger.warning("Inference Endpoint %s/%s is gone; creating it again.", ns, name)
        self.status.endpoint_name = None
        self._create_endpoint(timeout)
        return None

    def _roll_back(
        self, old: HuggingFaceDeploymentConfig, timeout: float, cause: Exception
    ) -> None:
        """Puts the endpoint back on the previous revision, waits for it, then raises."""
        hub = _hub()
        token = self._token()
        ns, name = self._where()
        new = self.config
        self._event(f"update to {new.model_label()} failed; rolling back to {old.model_label()}")
        backend = cause.backend_message if isinstance(cause, DeploymentError) else str(cause)
        try:
            with hub.hf_errors(f"Rolling back '{ns}/{name}'", self.deployment_name):
                hub.api().update_inference_endpoint(
                    name, namespace=ns, token=token, **hub.update_kwargs(old, new)
                )
            endpoint = hub.wait_until_running(
                self, timeout=timeout, what=f"rollback to {old.model_label()}", expect=old
            )
            self._record(endpoint)
        except Exception as rollback_error:
            self._event(f"rollback to {old.model_label()} failed")
            raise DeploymentError(
                f"Updating deployment '{self.deployment_name}' to {new.model_label()} failed, "
                f"and putting Inference Endpoint '{ns}/{name}' back on {old.model_label()} "
                f"failed too: {rollback_error}",
                deployment_name=self.deployment_name,
                backend_message=backend,
                hint="check the endpoint in the Hugging Face UI; deploy a known-good revision "
                "again (`zmd models recreate --run <run>`).",
            ) from cause
        self._event(f"rolled back: {ns}/{name} serves {old.model_label()} again")
        cls = type(cause) if isinstance(cause, DeploymentError) else DeploymentError
        first = cause.args[0].splitlines()[0] if cause.args else str(cause)
        raise cls(
            f"{first} The endpoint was put back on the previous revision "
            f"({old.model_label()}), which serves again at the same URL.",
            deployment_name=self.deployment_name,
            backend_message=backend,
            hint=cause.hint if isinstance(cause, DeploymentError) else None,
        ) from cause

    def _smoke(self) -> None:
        if self.config.smoke_input is None:
            return
        try:
            self.predict(self.config.smoke_input, timeout=60)
        except DeploymentError as e:
            raise DeploymentError(
                f"Deployment '{self.deployment_name}' runs but its smoke prediction failed.",
                deployment_name=self.deployment_name,
                backend_message=e.backend_message or str(e),
                hint="check `smoke_input` matches what the task expects.",
            ) from e

    def start_backend(self, timeout: float) -> None:
        """Resumes a paused (or failed) endpoint and waits until it runs; creates it again if
        it was deleted outside zmd. A scaled-to-zero endpoint is left to wake on its next
        request.

        Args:
            timeout: seconds.
        """
        hub = _hub()
        hub.check_offline()
        if self.status.endpoint_name is None:
            self._create_endpoint(timeout)
            self.mark_ready()
            return
        token = self._token()
        ns, name = self._where()
        endpoint = self._endpoint_or_recreate(timeout)
        if endpoint is None:
            self.mark_ready()
            return
        self._record(endpoint)
        state = str(endpoint.status)
        if state == "scaledToZero":
            self.admin_state = ServiceState.ACTIVE
            self.status.update_state(*map_state(state, "", self.deployment_name))
            return
        if state in ("paused", "failed", "updateFailed"):
            with hub.hf_errors(f"Resuming Inference Endpoint '{ns}/{name}'", self.deployment_name):
                hub.api().resume_inference_endpoint(name, namespace=ns, token=token)
            self._event(f"resumed {ns}/{name}")
        endpoint = hub.wait_until_running(self, timeout=timeout, what="start", expect=None)
        self._record(endpoint)
        self.mark_ready()

    def stop_backend(self, timeout: float) -> None:
        """Pauses the endpoint (never deletes it): no cost, same URL after ``start``.

        Args:
            timeout: seconds to wait until Hugging Face reports it paused.
        """
        if self.status.endpoint_name is None:
            self.admin_state = ServiceState.INACTIVE
            self.status.update_state(ServiceState.INACTIVE, "")
            return
        hub = _hub()
        hub.check_offline()
        self.admin_state = ServiceState.INACTIVE
        token = self._token()
        ns, name = self._where()
        try:
            with hub.hf_errors(f"Pausing Inference Endpoint '{ns}/{name}'", self.deployment_name):
                endpoint = hub.api().pause_inference_endpoint(name, namespace=ns, token=token)
        except DeploymentError as e:
            if _status(e) != 404:
                raise
            self.status.update_state(ServiceState.INACTIVE, f"{ns}/{name} no longer exists")
            return
        self._record(endpoint)
        endpoint = hub.wait_for_state(self, "paused", timeout)
        self._record(endpoint)
        self._event(f"paused {ns}/{name}")
        self.status.update_state(*map_state("paused", "", self.deployment_name))

    def delete_backend(self, timeout: float) -> None:
        """Deletes the endpoint and waits (up to ``timeout``) until it is gone. Idempotent.

        Args:
            timeout: seconds to wait for Hugging Face's asynchronous deletion.
        """
        if self.status.endpoint_name is not None:
            hub = _hub()
            hub.check_offline()
            token = self._token()
            ns, name = self._where()
            try:
                with hub.hf_errors(
                    f"Deleting Inference Endpoint '{ns}/{name}'", self.deployment_name
                ):
                    hub.api().delete_inference_endpoint(name, namespace=ns, token=token)
            except DeploymentError as e:
                if _status(e) != 404:
                    raise
            if not hub.wait_until_gone(self, timeout):
                logger.warning("Inference Endpoint %s/%s is still being deleted.", ns, name)
            self._event(f"deleted {ns}/{name}")
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
            token = self._token()
            ns, name = self._where()
            with hub.hf_errors(f"Reading Inference Endpoint '{ns}/{name}'", self.deployment_name):
                endpoint = hub.api().get_inference_endpoint(name, namespace=ns, token=token)
        except DeploymentError as e:
            if _status(e) == 404:
                return (
                    ServiceState.ERROR,
                    f"Inference Endpoint {self.endpoint_label} no longer exists (deleted outside "
                    f"zmd?); `zmd models start {self.deployment_name}` creates it again.",
                )
            return ServiceState.ERROR, secrets.redact(f"cannot read the endpoint's state: {e}")
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
        return hub.predict(self, data, timeout=timeout, parameters=parameters)

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
        if hasattr(data, "tolist"):
            data = data.tolist()
        return headers, json.dumps({"inputs": data}).encode()

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

"""A Unity Catalog model served by a Databricks Model Serving endpoint, updated in place.

The endpoint's URL is Databricks' own, by endpoint name (``<host>/serving-endpoints/<name>``):
it stays the same across updates, canaries, and a stop (which deletes the endpoint: Databricks
has no stop) followed by a start (which creates it again under the same name). Updates,
canaries, their wait and their rollback run on
:class:`~zenml_model_deployers.remote.InPlaceDeploymentService`. ``databricks-sdk`` is
imported only in ``backend.py``, when a method talks to Databricks.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Generator
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, PrivateAttr
from zenml.enums import ServiceState
from zenml.models.v2.misc.service import ServiceType

from zenml_model_deployers import secrets
from zenml_model_deployers.config import DeploymentConfig
from zenml_model_deployers.errors import ConfigurationError, DeploymentError, PredictionError
from zenml_model_deployers.flavors.databricks import backend, protocol

# Re-exported: stored services and artifacts name these by this module (before issue 24).
from zenml_model_deployers.flavors.databricks.config import (
    QUERY_FORMATS,
    WORKLOAD_SIZES,
    DatabricksDeploymentConfig,
    InferenceTable,
    model_uri_for,
)
from zenml_model_deployers.flavors.databricks.flavor import FLAVOR_NAME
from zenml_model_deployers.metrics import RevisionMetrics
from zenml_model_deployers.remote import BackendState, InPlaceDeploymentService, ServingTarget
from zenml_model_deployers.service import DeploymentStatus, serving_type

if TYPE_CHECKING:
    from databricks.sdk import WorkspaceClient

__all__ = [
    "QUERY_FORMATS",
    "WORKLOAD_SIZES",
    "DatabricksDeploymentConfig",
    "DatabricksDeploymentService",
    "DatabricksDeploymentStatus",
    "InferenceTable",
    "model_uri_for",
]

logger = logging.getLogger(__name__)

MAX_EVENTS = 50
# What start cannot bring back after stop deleted the endpoint (said before deleting).
NOT_RESTORED = (
    "permissions (ACLs), rate limits, AI gateway settings other than the inference table, "
    "email notifications, and any setting changed outside zmd"
)


class DatabricksDeploymentStatus(DeploymentStatus):
    """Where the endpoint is and what Databricks last said about it.

    Attributes:
        endpoint_name: the endpoint's name, once this deployment created it (None: none
            exists that zmd made, e.g. before the first deploy).
        stopped: the endpoint was deleted by ``stop``; ``start`` creates it again.
        ready: Databricks' last ``state.ready`` (``READY`` / ``NOT_READY``).
        config_update: Databricks' last ``state.config_update``.
        dbx_message: Databricks' last message about a served entity.
        events: what zmd did to the endpoint, newest last.
    """

    endpoint_name: str | None = None
    stopped: bool = False
    ready: str | None = None
    config_update: str | None = None
    dbx_message: str = ""
    events: list[str] = Field(default_factory=list)


class DatabricksDeploymentService(InPlaceDeploymentService):
    """A Unity Catalog model version on a Databricks Model Serving endpoint."""

    SERVICE_TYPE: ClassVar[ServiceType] = serving_type(
        FLAVOR_NAME, "Databricks Model Serving endpoint managed by zenml-model-deployers"
    )
    FLAVOR: ClassVar[str] = FLAVOR_NAME
    PREDICT_PATH: ClassVar[str] = "/invocations"
    BACKEND: ClassVar[str] = "Databricks"
    SUPPORTS_TRAFFIC_SPLIT: ClassVar[bool] = True
    FIRST_POLL: ClassVar[float] = 0.2
    MAX_POLL: ClassVar[float] = 10.0

    config: DatabricksDeploymentConfig
    status: DatabricksDeploymentStatus

    _client: Any = PrivateAttr(default=None)
    _client_key: str = PrivateAttr(default="")

    # ----------------------------------------------------------------- names and clients
    @property
    def endpoint_name(self) -> str:
        """The serving endpoint's name: the deployment name (Databricks URLs are by name)."""
        return self.status.endpoint_name or self.deployment_name

    @property
    def scope(self) -> str:
        """The Databricks secret scope of this deployment's ZenML-secret env values."""
        return backend.scope_name(self.deployment_name)

    def workspace(self, http_timeout: float | None = None) -> WorkspaceClient:
        """A client for the deployment's workspace (credentials resolved now).

        Args:
            http_timeout: the SDK's HTTP timeout in seconds.

        Returns:
            The client.
        """
        # One client per service object and credentials: building one reads the workspace's
        # host metadata (a request) and, for OAuth, fetches a token.
        c = self.config
        key = f"{c.host}|{c.token}|{c.client_id}|{c.client_secret}"
        if self._client is None or self._client_key != key:
            self._client = backend.client(c)
            self._client_key = key
        w: WorkspaceClient = self._client
        if http_timeout is not None:
            w.config.http_timeout_seconds = int(max(http_timeout, 1))
        return w

    def _endpoint(self, http_timeout: float | None = None) -> backend.EndpointHandle:
        """The endpoint's API calls."""
        return backend.EndpointHandle(
            self.workspace(http_timeout), self.endpoint_name, self.deployment_name, self.scope
        )

    @property
    def _url(self) -> str:
        return f"{self.config.host.rstrip('/')}/serving-endpoints/{self.endpoint_name}"

    # ----------------------------------------------------------------- the in-place hooks
    def record_event(self, message: str) -> None:
        """Keeps what zmd did to the endpoint (what ``get_logs`` shows first).

        Args:
            message: one line (redacted here).
        """
        self.status.events = [*self.status.events, secrets.redact(message)][-MAX_EVENTS:]

    def revision_label(self, config: DeploymentConfig) -> str:
        """``catalog.schema.model v3`` (+ the revision's hash).

        Args:
            config: a revision.

        Returns:
            A label.
        """
        assert isinstance(config, DatabricksDeploymentConfig)
        return f"{config.model_label()} ({config.config_hash()[:8]})"

    def apply_target(self, target: ServingTarget, previous: ServingTarget | None) -> None:
        """Creates the endpoint (no previous) or updates its config in place.

        Databricks refuses a config change while one is in progress: an apply (e.g. the
        rollback after a timed-out update) first waits, up to the rollout's timeout, until the
        running one ends.

        Args:
            target: what to serve.
            previous: what served (None: create).
        """
        w = self.workspace()
        for cfg in (target.stable, target.candidate):
            if cfg is not None:
                assert isinstance(cfg, DatabricksDeploymentConfig)
                backend.check_model_version(w, cfg)
        if previous is None or self.status.endpoint_name is None:
            self._endpoint().create(target)
            self.status.endpoint_name = self.deployment_name
            self.status.stopped = False
            self.status.url = self._url
            self.record_event(f"created endpoint {self.endpoint_name}: {self.target_label(target)}")
            return
        if not self.restoring_after_interruption:
            # One attempt, no wait, when restoring after an interruption.
            self.poll_backend(
                lambda s: s.gone or self.status.config_update != "IN_PROGRESS",
                self.rollout_timeout,
            )
        self._endpoint().update(target, previous)
        self.record_event(f"updating endpoint {self.endpoint_name}: {self.target_label(target)}")

    def read_backend(self) -> BackendState:
        """Reads the endpoint (one `serving_endpoints.get`).

        Returns:
            Its state: ``READY/NOT_UPDATING`` words, Databricks' served-entity message,
            ``failed`` on ``UPDATE_FAILED`` / ``UPDATE_CANCELED``, ``gone`` when missing.
        """
        try:
            ep = self._endpoint().get()
        except DeploymentError as e:
            if backend.is_not_found(e):
                return BackendState(state="MISSING", gone=True, message=e.backend_message or "")
            raise
        ready = backend.enum_value(ep.state.ready if ep.state else None)
        update = backend.enum_value(ep.state.config_update if ep.state else None)
        self.status.ready, self.status.config_update = ready, update
        message = backend.entity_message(ep)
        self.status.dbx_message = message
        return BackendState(
            state=f"{ready}/{update}",
            message=message,
            url=self._url,
            failed=update in ("UPDATE_FAILED", "UPDATE_CANCELED"),
            raw=ep,
        )

    def serves(self, state: BackendState, target: ServingTarget) -> bool:
        """Ready, not updating, and the config's served entities and routes are the target's.

        Args:
            state: a read.
            target: what should serve.

        Returns:
            True when requests are answered by ``target``.
        """
        ep = state.raw
        if ep is None or state.state != "READY/NOT_UPDATING" or ep.config is None:
            return False
        names = {e.name for e in ep.config.served_entities or []}
        want = backend.expected_routes(target)
        return backend.served_routes(ep) == want and names == set(want)

    def on_create_failed(self, cause: BaseException) -> None:
        """Nothing half-made: an endpoint a failed create made (a deploy, or a start after a
        stop) is deleted.

        Args:
            cause: what failed.
        """
        if self.status.endpoint_name is not None:
            with contextlib.suppress(Exception):  # the failure that matters is ``cause``
                self._delete_endpoint(timeout=30)

    def provision_revision(self, timeout: float) -> None:
        """Creates or updates the endpoint (see the base), after checking the workspace.

        Args:
            timeout: seconds.
        """
        if not self.config.host:
            raise ConfigurationError(
                f"Deployment '{self.deployment_name}' names no Databricks workspace (host).",
                deployment_name=self.deployment_name,
                hint="register the zmd-databricks component with --host=https://<workspace>.",
            )
        super().provision_revision(timeout)

    def start_backend(self, timeout: float) -> None:
        """Creates the endpoint again under the same name (same URL) from the recorded config,
        canary included, and waits until it serves. An endpoint that still exists and serves
        the recorded target is left as it is.

        Args:
            timeout: seconds (creating an endpoint takes minutes on Databricks).
        """
        live = self.live_target()
        if live is None:
            raise ConfigurationError(
                f"Deployment '{self.deployment_name}' has no recorded revision to start.",
                deployment_name=self.deployment_name,
                hint="deploy it (run the pipeline, or `zmd models recreate --run <run>`).",
            )
        state = self.read_backend() if self.status.endpoint_name else None
        if state is not None and not state.gone:
            if self.serves(state, live):
                self.mark_ready()
                return
            self.roll_out(live, live, timeout, f"start of {self.target_label(live)}")
            self.mark_ready()
            return
        self.status.endpoint_name = None
        # Nothing half-made: a failure deletes the endpoint this start created (on_create_failed).
        self.roll_out(live, None, timeout, f"re-creation of {self.target_label(live)}")
        self.record_event(f"started: endpoint {self.endpoint_name} created again")
        self.mark_ready()

    def stop_backend(self, timeout: float) -> None:
        """Deletes the endpoint (Databricks has no stop or pause) and keeps the record and
        config, so ``start`` creates it again under the same name and URL. Says first what
        ``start`` will not restore.

        Args:
            timeout: seconds to wait until the endpoint is gone.
        """
        if self.status.endpoint_name is not None:
            logger.warning(
                "Databricks has no stop: stopping deployment '%s' deletes serving endpoint "
                "'%s'. `zmd models start %s` creates it again with the same name and URL and "
                "the recorded served entities, routes, tags and inference table; it does not "
                "restore %s. With scale_to_zero_enabled an idle endpoint already costs "
                "nothing.",
                self.deployment_name,
                self.endpoint_name,
                self.deployment_name,
                NOT_RESTORED,
            )
            self._delete_endpoint(timeout)
            self.record_event(
                f"stopped: endpoint {self.endpoint_name} deleted (start re-creates it)"
            )
        self.status.endpoint_name = None
        self.status.stopped = True
        self.admin_state = ServiceState.INACTIVE
        self.status.update_state(
            ServiceState.INACTIVE,
            f"stopped (endpoint deleted); `zmd models start {self.deployment_name}` creates it "
            "again on the same URL",
        )

    def delete_backend(self, timeout: float) -> None:
        """Deletes the endpoint this deployment created and its secret scope. Idempotent.

        Args:
            timeout: seconds to wait until the endpoint is gone.
        """
        if self.status.endpoint_name is not None:
            self._delete_endpoint(timeout)
        if any(secrets.is_secret_reference(v) for v in self._all_env_values()):
            self._endpoint().delete_scope()
        self.status.endpoint_name = None
        self.status.url = None
        self.admin_state = ServiceState.INACTIVE
        self.status.update_state(ServiceState.INACTIVE, "deleted")

    def _all_env_values(self) -> list[str]:
        values = list(self.config.env.values())
        for data in (self.status.live_config, self.status.canary_config):
            if data:
                values += [str(v) for v in (data.get("env") or {}).values()]
        return values

    def _delete_endpoint(self, timeout: float) -> None:
        self._endpoint().delete()
        if self.poll_backend(lambda s: s.gone, timeout) is None:
            logger.warning("Serving endpoint %s is still being deleted.", self.endpoint_name)

    def check_status(self) -> tuple[ServiceState, str]:
        """Reads the endpoint's state from Databricks (one API call).

        Returns:
            (state, message): ``active`` while an entity serves (an update in progress or a
            failed update still serve the previous config), ``inactive`` once stopped.
        """
        if self.status.endpoint_name is None:
            if self.status.stopped:
                return (
                    ServiceState.INACTIVE,
                    f"stopped (endpoint deleted); `zmd models start {self.deployment_name}` "
                    "creates it again on the same URL",
                )
            return ServiceState.INACTIVE, "no serving endpoint (not deployed, or deleted)"
        try:
            state = self.read_backend()
        except Exception as e:
            return ServiceState.ERROR, secrets.redact(f"cannot read the endpoint's state: {e}")
        if state.gone:
            return (
                ServiceState.ERROR,
                f"serving endpoint '{self.endpoint_name}' no longer exists (deleted outside "
                f"zmd?); `zmd models start {self.deployment_name}` creates it again.",
            )
        if self.status.ready == "READY":
            note = {
                "IN_PROGRESS": "a config update is in progress; the previous config serves",
                "UPDATE_FAILED": f"the last config update failed: {state.message}",
            }.get(self.status.config_update or "", "")
            return ServiceState.ACTIVE, note
        return ServiceState.PENDING_STARTUP, f"Databricks: {state.state} {state.message}".strip()

    def get_logs(self, follow: bool = False, tail: int | None = None) -> Generator[str, bool, None]:
        """Yields zmd's events, then each served entity's server logs
        (`serving_endpoints.logs`).

        Args:
            follow: ignored (Databricks returns a snapshot).
            tail: only the last N lines.

        Yields:
            Lines (redacted).
        """
        lines = list(self.status.events)
        live = self.live_target()
        if self.status.endpoint_name is not None and live is not None:
            endpoint = self._endpoint()
            for cfg in (live.stable, live.candidate):
                if not isinstance(cfg, DatabricksDeploymentConfig):
                    continue
                entity = cfg.served_entity_name
                try:
                    text = endpoint.entity_logs(entity)
                except DeploymentError as e:
                    lines.append(f"[{entity}] logs unavailable: {e.backend_message or e}")
                    continue
                lines += [f"[{entity}] {line}" for line in text.splitlines()]
        if tail:
            lines = lines[-tail:]
        for line in lines:
            yield secrets.redact(line)

    def read_revision_metrics(self, window: float | None = None) -> dict[str, RevisionMetrics]:
        """Requests and errors per served entity from `serving_endpoints.export_metrics`
        (Prometheus text), keyed by revision: cumulative counts (the endpoint keeps no
        history, so `window` is ignored; the rollout differences two readings).

        Args:
            window: ignored.

        Returns:
            config hash -> metrics, for the stable revision and the canary's candidate.
        """
        counts = self._endpoint().request_counts()
        out: dict[str, RevisionMetrics] = {}
        live = self.live_target()
        for cfg in (live.stable, live.candidate) if live else ():
            if isinstance(cfg, DatabricksDeploymentConfig):
                requests, errors = counts.get(cfg.served_entity_name, (0, 0))
                out[cfg.config_hash()] = RevisionMetrics(
                    config_hash=cfg.config_hash(), requests=requests, errors=errors
                )
        return out

    # ----------------------------------------------------------------- predictions
    def request_body(self, data: Any) -> dict[str, Any]:
        """The invocation body for ``data`` (see ``protocol.request_body``), in the config's
        ``query_format``.

        Args:
            data: the input.

        Returns:
            The JSON body.
        """
        return protocol.request_body(data, self.config.query_format)

    def predict(self, data: Any, timeout: float = 60.0) -> Any:
        """Queries the endpoint with `serving_endpoints.query`.

        Args:
            data: a DataFrame, array, list of records, dict of columns, chat
                ``{"messages": [...]}``, or a body naming its input form.
            timeout: seconds.

        Returns:
            The endpoint's ``predictions`` (``choices`` for chat endpoints).

        Raises:
            PredictionError: Databricks answered an error, or the deployment is not running.
        """
        if self.status.endpoint_name is None:
            raise PredictionError(
                f"Deployment '{self.deployment_name}' has no serving endpoint (stopped or "
                "never deployed).",
                deployment_name=self.deployment_name,
                hint=f"`zmd models start {self.deployment_name}`.",
            )
        return self._endpoint(http_timeout=timeout).query(self.request_body(data))

    def format_request(self, data: Any) -> tuple[dict[str, str], bytes]:
        """The raw invocation request, authenticated (for clients that POST to the URL).

        Args:
            data: the input.

        Returns:
            (headers with a bearer token from the deployment's credentials, body).
        """
        headers = {"Content-Type": "application/json"}
        headers.update(self.workspace().config.authenticate())
        return headers, json.dumps(self.request_body(data)).encode()

    def parse_response(self, body: bytes) -> Any:
        """The ``predictions`` of a raw invocation response.

        Args:
            body: the response body.

        Returns:
            Predictions (or the whole JSON for other endpoint kinds).
        """
        return protocol.predictions_of(body)

    # ----------------------------------------------------------------- descriptions
    def curl_example(self) -> str:
        """A request in Databricks' ``dataframe_split`` form with ``$DATABRICKS_TOKEN``.

        Returns:
            A curl command line (no credentials).
        """
        url = self.prediction_url or "(not deployed)"
        return (
            f'curl -s -X POST {url} -H "Authorization: Bearer $DATABRICKS_TOKEN" '
            "-H 'Content-Type: application/json' "
            '-d \'{"dataframe_split": {"columns": [...], "data": [[...]]}}\''
        )

    def describe(self) -> dict[str, Any]:
        """Adds the endpoint, the served entity and Databricks' state.

        Returns:
            A JSON-able dict.
        """
        d = super().describe()
        d.update(
            {
                "endpoint": self.endpoint_name if self.status.endpoint_name else None,
                "served_entity": self.config.served_entity_name,
                "uc_model": self.config.entity_name,
                "uc_version": self.config.entity_version,
                "databricks_state": (
                    f"{self.status.ready}/{self.status.config_update}"
                    if self.status.ready
                    else None
                ),
                "status_message": self.status.last_error or self.status.dbx_message,
            }
        )
        return d

    def labels(self) -> dict[str, str]:
        """Adds the endpoint's name and the Unity Catalog model.

        Returns:
            Labels.
        """
        return {
            **super().labels(),
            "zmd_dbx_endpoint": self.endpoint_name,
            "zmd_uc_model": self.config.entity_name,
        }

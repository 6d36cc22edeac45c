"""A Unity Catalog model served by a Databricks Model Serving endpoint, updated in place.

The endpoint's URL is Databricks' own, by endpoint name (``<host>/serving-endpoints/<name>``):
it stays the same across updates, canaries, and a stop (which deletes the endpoint: Databricks
has no stop) followed by a start (which creates it again under the same name).
``databricks-sdk`` is imported only in ``workspace.py``, when a method talks to Databricks.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Generator
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator
from zenml.enums import ServiceState
from zenml.models.v2.misc.service import ServiceType

from zenml_model_deployers import secrets
from zenml_model_deployers.config import DeploymentConfig
from zenml_model_deployers.errors import ConfigurationError, DeploymentError, PredictionError
from zenml_model_deployers.flavors.databricks.flavor import FLAVOR_NAME, reject_plain_credentials
from zenml_model_deployers.remote import BackendState, InPlaceDeploymentService, ServingTarget
from zenml_model_deployers.service import DeploymentStatus, RevisionMetrics

if TYPE_CHECKING:
    from databricks.sdk import WorkspaceClient

logger = logging.getLogger(__name__)

_MODEL_URI = re.compile(r"^models:/(?P<name>[^/\s]+)/(?P<version>\d+)$")
_ENTITY_SAFE = re.compile(r"[^A-Za-z0-9_-]+")
QUERY_FORMATS = ("auto", "dataframe_split", "dataframe_records", "instances", "inputs", "messages")
WORKLOAD_SIZES = ("Small", "Medium", "Large")
MAX_EVENTS = 50
# What start cannot bring back after stop deleted the endpoint (said before deleting).
NOT_RESTORED = (
    "permissions (ACLs), rate limits, AI gateway settings other than the inference table, "
    "email notifications, and any setting changed outside zmd"
)


def model_uri_for(name: str, version: str | int) -> str:
    """The model reference of a Unity Catalog model version.

    Args:
        name: ``catalog.schema.model``.
        version: the version.

    Returns:
        ``models:/catalog.schema.model/<version>``.
    """
    return f"models:/{name}/{version}"


class InferenceTable(BaseModel):
    """The AI gateway's inference table: requests and responses logged to Unity Catalog.

    Attributes:
        catalog_name: the catalog of the table.
        schema_name: its schema.
        table_name_prefix: prefix of the table's name (Databricks appends ``_payload``).
    """

    model_config = ConfigDict(extra="forbid")

    catalog_name: str
    schema_name: str
    table_name_prefix: str = ""

    def to_sdk(self) -> Any:
        """The SDK's ``AiGatewayInferenceTableConfig`` (enabled).

        Returns:
            The SDK object.
        """
        from databricks.sdk.service.serving import AiGatewayInferenceTableConfig

        return AiGatewayInferenceTableConfig(
            enabled=True,
            catalog_name=self.catalog_name,
            schema_name=self.schema_name,
            table_name_prefix=self.table_name_prefix or None,
        )


class DatabricksDeploymentConfig(DeploymentConfig):
    """How to serve a Unity Catalog model version on a Model Serving endpoint.

    Attributes:
        model_uri: ``models:/catalog.schema.model/<version>``.
        workload_size: ``Small``, ``Medium`` or ``Large`` (concurrency per served entity).
        workload_type: e.g. ``CPU``, ``GPU_SMALL`` (None: Databricks' default, CPU).
        scale_to_zero_enabled: an idle endpoint scales to zero (and costs nothing).
        env: the served entity's environment variables; values may be Databricks
            ``{{secrets/scope/key}}`` references (sent as they are) or ZenML secret references
            ``{{secret.key}}`` (stored in the deployment's Databricks secret scope and sent as
            a ``{{secrets/...}}`` reference: no value in the endpoint's config).
        tags: the endpoint's tags (propagated to billing logs).
        inference_table: log requests and responses to this Unity Catalog table (AI gateway).
        query_format: the input form ``predict`` sends (``auto``: from the data's type).
        host: the workspace URL (default: the component's).
        token: secret reference to a personal access token (default: the component's).
        client_id: a service principal's client id (default: the component's).
        client_secret: secret reference to its secret (default: the component's).
    """

    # Where the endpoint lives and the credentials say how to reach it, not what it serves.
    PROVENANCE_FIELDS: ClassVar[frozenset[str]] = DeploymentConfig.PROVENANCE_FIELDS | {
        "host",
        "token",
        "client_id",
        "client_secret",
        "query_format",
    }
    model_config = ConfigDict(hide_input_in_errors=True)

    health_path: str = ""
    workload_size: str = "Small"
    workload_type: str | None = None
    scale_to_zero_enabled: bool = True
    tags: dict[str, str] = Field(default_factory=dict)
    inference_table: InferenceTable | None = None
    query_format: Literal[
        "auto", "dataframe_split", "dataframe_records", "instances", "inputs", "messages"
    ] = "auto"
    host: str = ""
    token: str | None = None
    client_id: str | None = None
    client_secret: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _credentials_are_references(cls, data: Any) -> Any:
        return reject_plain_credentials(data, "zmd-databricks deployment")

    @field_validator("model_uri")
    @classmethod
    def _uc_model_version(cls, v: str) -> str:
        if v in ("", "-") or _MODEL_URI.match(v):
            return v
        raise ValueError(
            f"model_uri {v!r} is not a Unity Catalog model version: use "
            "'models:/catalog.schema.model/<version>' (or registered_model_name= and "
            "model_version= in the step)."
        )

    @field_validator("workload_size")
    @classmethod
    def _known_size(cls, v: str) -> str:
        if v not in WORKLOAD_SIZES:
            raise ValueError(f"workload_size {v!r} must be one of {', '.join(WORKLOAD_SIZES)}.")
        return v

    @field_validator("workload_type")
    @classmethod
    def _known_type(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            from databricks.sdk.service.serving import ServingModelWorkloadType
        except ImportError:
            return v
        known = [t.value for t in ServingModelWorkloadType]
        if v not in known:
            raise ValueError(f"workload_type {v!r} is not one of {', '.join(known)}.")
        return v

    @property
    def entity_name(self) -> str:
        """The Unity Catalog model's full name (``catalog.schema.model``)."""
        m = _MODEL_URI.match(self.model_uri)
        return m.group("name") if m else ""

    @property
    def entity_version(self) -> str:
        """The served model version."""
        m = _MODEL_URI.match(self.model_uri)
        return m.group("version") if m else ""

    @property
    def served_entity_name(self) -> str:
        """The served entity's name: model, version and revision, so a canary's two entities
        (even of one version with other settings) never share a name."""
        short = _ENTITY_SAFE.sub("-", self.entity_name.rsplit(".", 1)[-1])[:40].strip("-")
        return f"{short or 'model'}-{self.entity_version}-{self.config_hash()[:6]}"

    def model_label(self) -> str:
        """``catalog.schema.model v<version>`` for messages.

        Returns:
            A string.
        """
        return f"{self.entity_name} v{self.entity_version}"


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


def _enum(value: Any) -> str | None:
    if value is None:
        return None
    return str(getattr(value, "value", value))


class DatabricksDeploymentService(InPlaceDeploymentService):
    """A Unity Catalog model version on a Databricks Model Serving endpoint."""

    SERVICE_TYPE: ClassVar[ServiceType] = ServiceType(
        name="zmd-databricks-deployment",
        type="model-serving",
        flavor=FLAVOR_NAME,
        description="Databricks Model Serving endpoint managed by zenml-model-deployers",
    )
    FLAVOR: ClassVar[str] = FLAVOR_NAME
    PREDICT_PATH: ClassVar[str] = "/invocations"
    BACKEND: ClassVar[str] = "Databricks"
    SUPPORTS_TRAFFIC_SPLIT: ClassVar[bool] = True
    FIRST_POLL: ClassVar[float] = 0.2
    MAX_POLL: ClassVar[float] = 10.0

    config: DatabricksDeploymentConfig
    status: DatabricksDeploymentStatus

    _apply_wait: float = PrivateAttr(default=0.0)
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
        from zenml_model_deployers.flavors.databricks.workspace import scope_name

        return scope_name(self.deployment_name)

    def workspace(self, http_timeout: float | None = None) -> WorkspaceClient:
        """A client for the deployment's workspace (credentials resolved now).

        Args:
            http_timeout: the SDK's HTTP timeout in seconds.

        Returns:
            The client.
        """
        from zenml_model_deployers.flavors.databricks import workspace

        # One client per service object and credentials: building one reads the workspace's
        # host metadata (a request) and, for OAuth, fetches a token.
        c = self.config
        key = f"{c.host}|{c.token}|{c.client_id}|{c.client_secret}"
        if self._client is None or self._client_key != key:
            self._client = workspace.client(c)
            self._client_key = key
        w: WorkspaceClient = self._client
        if http_timeout is not None:
            w.config.http_timeout_seconds = int(max(http_timeout, 1))
        return w

    def _event(self, text: str) -> None:
        self.status.events = [*self.status.events, secrets.redact(text)][-MAX_EVENTS:]

    def revision_label(self, config: DeploymentConfig) -> str:
        """``catalog.schema.model v3`` (+ the revision's hash).

        Args:
            config: a revision.

        Returns:
            A label.
        """
        assert isinstance(config, DatabricksDeploymentConfig)
        return f"{config.model_label()} ({config.config_hash()[:8]})"

    # ----------------------------------------------------------------- the in-place hooks
    def roll_out(
        self, target: ServingTarget, previous: ServingTarget | None, timeout: float, what: str
    ) -> BackendState:
        """See the base; remembers how long an apply may wait for a running update to end.

        Args:
            target: what to serve.
            previous: what served.
            timeout: seconds.
            what: for messages.

        Returns:
            The serving state.
        """
        self._apply_wait = timeout
        return super().roll_out(target, previous, timeout, what)

    def apply_target(self, target: ServingTarget, previous: ServingTarget | None) -> None:
        """Creates the endpoint (no previous) or updates its config in place.

        Databricks refuses a config change while one is in progress: an apply (e.g. the
        rollback after a timed-out update) first waits, up to the rollout's timeout, until the
        running one ends.

        Args:
            target: what to serve.
            previous: what served (None: create).
        """
        from zenml_model_deployers.flavors.databricks import workspace

        w = self.workspace()
        for cfg in (target.stable, target.candidate):
            if cfg is not None:
                assert isinstance(cfg, DatabricksDeploymentConfig)
                workspace.check_model_version(w, cfg)
        if previous is None or self.status.endpoint_name is None:
            workspace.create_endpoint(self, w, target)
            self.status.endpoint_name = self.deployment_name
            self.status.stopped = False
            self.status.url = (
                f"{self.config.host.rstrip('/')}/serving-endpoints/{self.endpoint_name}"
            )
            self._event(f"created endpoint {self.endpoint_name}: {self.target_label(target)}")
            return
        self._wait_while_updating()
        workspace.update_endpoint(self, w, target, previous)
        self._event(f"updating endpoint {self.endpoint_name}: {self.target_label(target)}")

    def _wait_while_updating(self) -> None:
        if self.restoring_after_interruption:
            return  # one attempt, no wait: Databricks refuses it while the update runs
        deadline = time.monotonic() + self._apply_wait
        while time.monotonic() < deadline:
            state = self.read_backend()
            if state.gone or self.status.config_update != "IN_PROGRESS":
                return
            time.sleep(min(1.0, max(deadline - time.monotonic(), 0.0)))

    def read_backend(self) -> BackendState:
        """Reads the endpoint (one `serving_endpoints.get`).

        Returns:
            Its state: ``READY/NOT_UPDATING`` words, Databricks' served-entity message,
            ``failed`` on ``UPDATE_FAILED`` / ``UPDATE_CANCELED``, ``gone`` when missing.
        """
        from zenml_model_deployers.flavors.databricks import workspace

        w = self.workspace()
        try:
            with workspace.dbx_errors(
                f"Reading serving endpoint '{self.endpoint_name}'", self.deployment_name
            ):
                ep = w.serving_endpoints.get(self.endpoint_name)
        except DeploymentError as e:
            if workspace.is_not_found(e):
                return BackendState(state="MISSING", gone=True, message=e.backend_message or "")
            raise
        ready = _enum(ep.state.ready if ep.state else None)
        update = _enum(ep.state.config_update if ep.state else None)
        self.status.ready, self.status.config_update = ready, update
        message = _entity_message(ep)
        self.status.dbx_message = message
        return BackendState(
            state=f"{ready}/{update}",
            message=message,
            url=f"{self.config.host.rstrip('/')}/serving-endpoints/{self.endpoint_name}",
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
        from zenml_model_deployers.flavors.databricks.workspace import expected_routes

        ep = state.raw
        if ep is None or state.state != "READY/NOT_UPDATING" or ep.config is None:
            return False
        routes = {
            r.served_entity_name or r.served_model_name: r.traffic_percentage
            for r in (ep.config.traffic_config.routes if ep.config.traffic_config else None) or []
        }
        names = {e.name for e in ep.config.served_entities or []}
        want = expected_routes(target)
        return routes == want and names == set(want)

    # ----------------------------------------------------------------- lifecycle hooks
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
        try:
            self.roll_out(live, None, timeout, f"re-creation of {self.target_label(live)}")
        except BaseException:
            # Nothing half-made: the endpoint this start created goes away with its failure.
            if self.status.endpoint_name is not None:
                self._delete_endpoint(timeout=30)
            raise
        self._event(f"started: endpoint {self.endpoint_name} created again")
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
            self._event(f"stopped: endpoint {self.endpoint_name} deleted (start re-creates it)")
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
            self._delete_scope()
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
        from zenml_model_deployers.flavors.databricks import workspace

        w = self.workspace()
        try:
            with workspace.dbx_errors(
                f"Deleting serving endpoint '{self.endpoint_name}'", self.deployment_name
            ):
                w.serving_endpoints.delete(self.endpoint_name)
        except DeploymentError as e:
            if not workspace.is_not_found(e):
                raise
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.read_backend().gone:
                return
            time.sleep(0.2)
        logger.warning("Serving endpoint %s is still being deleted.", self.endpoint_name)

    def _delete_scope(self) -> None:
        from zenml_model_deployers.flavors.databricks import workspace

        w = self.workspace()
        try:
            with workspace.dbx_errors(
                f"Deleting secret scope '{self.scope}'", self.deployment_name
            ):
                w.secrets.delete_scope(self.scope)
        except DeploymentError as e:
            if not workspace.is_not_found(e):
                raise

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
        from zenml_model_deployers.flavors.databricks import workspace

        lines = list(self.status.events)
        live = self.live_target()
        if self.status.endpoint_name is not None and live is not None:
            w = self.workspace()
            for cfg in (live.stable, live.candidate):
                if not isinstance(cfg, DatabricksDeploymentConfig):
                    continue
                entity = cfg.served_entity_name
                try:
                    with workspace.dbx_errors(
                        f"Reading logs of served entity '{entity}'", self.deployment_name
                    ):
                        text = w.serving_endpoints.logs(self.endpoint_name, entity).logs
                except DeploymentError as e:
                    lines.append(f"[{entity}] logs unavailable: {e.backend_message or e}")
                    continue
                lines += [f"[{entity}] {line}" for line in (text or "").splitlines()]
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
        from zenml_model_deployers.flavors.databricks import workspace

        w = self.workspace()
        with workspace.dbx_errors(
            f"Reading metrics of endpoint '{self.endpoint_name}'", self.deployment_name
        ):
            resp = w.serving_endpoints.export_metrics(self.endpoint_name)
        contents = resp.contents.read() if resp.contents is not None else b""
        text = contents.decode() if isinstance(contents, bytes) else str(contents)
        counts = _parse_metrics(text)
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
        """The invocation body for ``data`` in the configured (or inferred) input form.

        ``auto``: a DataFrame is sent as ``dataframe_split``; a list of dicts as
        ``dataframe_records``; a dict that already names a form (``dataframe_split``,
        ``instances``, ``inputs``, ``messages``, ...) as it is; a dict of columns as
        ``inputs``; an array or other list as ``instances``.

        Args:
            data: the input.

        Returns:
            The JSON body.
        """
        fmt = self.config.query_format
        if hasattr(data, "to_dict") and hasattr(data, "columns"):
            split = json.loads(data.to_json(orient="split", index=False))
            if fmt in ("auto", "dataframe_split"):
                return {"dataframe_split": split}
            if fmt == "dataframe_records":
                return {"dataframe_records": json.loads(data.to_json(orient="records"))}
            data = split["data"]
        if hasattr(data, "tolist"):
            data = data.tolist()
        if fmt == "messages":
            if isinstance(data, dict) and "messages" in data:
                return dict(data)
            return {
                "messages": data
                if isinstance(data, list)
                else [{"role": "user", "content": str(data)}]
            }
        if fmt != "auto":
            return {fmt: data}
        known = {
            "dataframe_split",
            "dataframe_records",
            "instances",
            "inputs",
            "messages",
            "input",
            "prompt",
        }
        if isinstance(data, dict) and known & set(data):
            return dict(data)
        if isinstance(data, dict):
            return {"inputs": data}
        if isinstance(data, list) and data and all(isinstance(r, dict) for r in data):
            return {"dataframe_records": data}
        return {"instances": data}

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
        from zenml_model_deployers.flavors.databricks import workspace

        return workspace.query(self, self.request_body(data), timeout)

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
        out = json.loads(body)
        return out.get("predictions", out) if isinstance(out, dict) else out

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


def _entity_message(ep: Any) -> str:
    """Databricks' message about the served entities, failures first (pending config first)."""
    messages: list[str] = []
    for cfg in (ep.pending_config, ep.config):
        for entity in (cfg.served_entities if cfg is not None else None) or []:
            st = entity.state
            if st is None or not st.deployment_state_message:
                continue
            text = f"{entity.name}: {st.deployment_state_message}"
            if _enum(st.deployment) == "DEPLOYMENT_FAILED":
                messages.insert(0, text)
            else:
                messages.append(text)
    return "\n".join(messages)


_METRIC = re.compile(
    r'^(?P<metric>[a-z_]+)\{[^}]*served_entity_name="(?P<entity>[^"]+)"[^}]*\}\s+(?P<value>[0-9.eE+-]+)'
)


def _parse_metrics(text: str) -> dict[str, tuple[int, int]]:
    """Request and error counters per served entity from Prometheus text."""
    out: dict[str, tuple[int, int]] = {}
    for line in text.splitlines():
        m = _METRIC.match(line.strip())
        if not m:
            continue
        req, err = out.get(m.group("entity"), (0, 0))
        value = int(float(m.group("value")))
        if m.group("metric") == "request_count_total":
            req += value
        elif m.group("metric") == "request_4xx_count_total" or m.group("metric") == (
            "request_5xx_count_total"
        ):
            err += value
        out[m.group("entity")] = (req, err)
    return out

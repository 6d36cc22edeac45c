"""DeploymentService: a deployment's config, status and URL, with predict() and (de)serialisation.

Services are ZenML services (``BaseDeploymentService``), so ZenML's own
``zenml model-deployer models ...`` commands and the dashboard see them.

ZenML's service store cannot update a service row's ``config`` after creation, so the live
revision's full config travels in the status (``status.live_config``) and wins when a service
is loaded from its row: the row always describes what is serving now.
"""

from __future__ import annotations

import importlib
import json
import threading
from abc import abstractmethod
from collections.abc import Generator
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, PrivateAttr, model_validator
from zenml.enums import ServiceState
from zenml.models.v2.misc.service import ServiceType
from zenml.services.service import BaseDeploymentService
from zenml.services.service_status import ServiceStatus

from zenml_model_deployers.config import DeploymentConfig, FieldsByName, FormerSources
from zenml_model_deployers.metrics import RevisionMetrics
from zenml_model_deployers.states import state_word

SCHEMA_VERSION = 1

__all__ = [
    "DeploymentService",
    "DeploymentStatus",
    "RevisionMetrics",
    "TrafficSplit",
    "load_service_class",
    "service_from_response",
    "serving_type",
]


def load_service_class(source: str) -> type[DeploymentService]:
    """Imports a service class by its import path.

    Our classes live in an installed package, so a plain import finds them anywhere —
    also in a notebook or ``python -c``, where ZenML's source loading cannot determine a
    source root. Other paths fall back to ZenML's source utilities.

    Args:
        source: e.g. ``zenml_model_deployers.flavors.mlflow.service.MLflowDeploymentService``.

    Returns:
        The class.

    Raises:
        TypeError: the path does not name a DeploymentService subclass.
    """
    module, _, name = source.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        from zenml.utils import source_utils

        cls = source_utils.load_and_validate_class(source, expected_class=DeploymentService)
    if not (isinstance(cls, type) and issubclass(cls, DeploymentService)):
        raise TypeError(f"{source} is not a zenml-model-deployers service class.")
    return cls


def serving_type(flavor: str, description: str) -> ServiceType:
    """ZenML's type of a flavor's deployments: ``<flavor>-deployment``, model serving (what
    ``zenml model-deployer models list`` and the dashboard show).

    Args:
        flavor: the flavor's name, e.g. ``zmd-mlflow``.
        description: a line for ZenML's listings.

    Returns:
        The service type (a service class's ``SERVICE_TYPE``).
    """
    return ServiceType(
        name=f"{flavor}-deployment", type="model-serving", flavor=flavor, description=description
    )


def service_from_response(resp: Any) -> DeploymentService:
    """Builds a service from a ZenML service row (``ServiceResponse``).

    Args:
        resp: the row, hydrated.

    Returns:
        The service (its live config, from the status, wins).

    Raises:
        TypeError: the row is not one of ours.
    """
    if not resp.service_source:
        raise TypeError(f"service {resp.id} has no service class recorded")
    cls = load_service_class(resp.service_source)
    return cls(
        uuid=resp.id,
        admin_state=resp.admin_state,
        config=resp.config,
        status=resp.status,
        endpoint=resp.endpoint,
    )


class DeploymentStatus(FieldsByName, FormerSources, ServiceStatus):
    """Operational status of a deployment.

    Attributes:
        url: the stable base URL (scheme://host:port) of the deployment.
        config_hash: hash of the revision that serves (the recorded revision).
        revision: how many revisions were rolled out (1 for a new deployment).
        live_config: the full config of the serving revision (see module docstring).
        deployed_at: when the serving revision became ready (ISO 8601, UTC).
        canary_config: during a canary, the candidate revision's full config (the stable one
            is ``live_config``); None otherwise.
        canary_percent: during a canary, the candidate's share of requests (1-99).
        prediction_url: the URL predictions go to (what ``deployed_model_url`` records).
    """

    url: str | None = None
    config_hash: str = ""
    revision: int = 0
    live_config: dict[str, Any] | None = None
    deployed_at: str | None = None
    canary_config: dict[str, Any] | None = None
    canary_percent: int = 0
    prediction_url: str | None = None


class TrafficSplit(BaseModel):
    """How a deployment's requests are to be shared between its revisions.

    Attributes:
        stable: the revision that serves the rest.
        candidate: a canary's candidate (None: ``stable`` serves every request).
        candidate_percent: the candidate's share of requests, 0-100.
    """

    model_config = ConfigDict(frozen=True)

    stable: DeploymentConfig
    candidate: DeploymentConfig | None = None
    candidate_percent: int = 0


class DeploymentService(BaseDeploymentService):
    """Base class of every flavor's service.

    Subclasses set ``SERVICE_TYPE``, ``FLAVOR``, the config/status types, and implement the
    backend hooks (``provision_revision``, ``retire``, ``start_backend``, ``stop_backend``,
    ``delete_backend``, ``check_status``, ``get_logs``) plus ``format_request`` for predict().
    The lifecycle that calls these hooks lives once, in ``deployer.BaseDeployer``; the two
    traffic hooks (``set_traffic_split``, ``read_revision_metrics``) are driven only by
    ``traffic.TrafficController`` (canaries, promote, rollback, progressive rollouts).
    """

    model_config = ConfigDict(validate_assignment=True, protected_namespaces=())

    FLAVOR: ClassVar[str] = ""
    PREDICT_PATH: ClassVar[str] = "/invocations"
    # Whether the backend can split traffic between two revisions (canaries): a flavor that
    # sets it implements `route_traffic` (or `set_traffic_split`) and, when it can,
    # `read_revision_metrics`.
    SUPPORTS_TRAFFIC_SPLIT: ClassVar[bool] = False
    # Rows per request a batch job sends when the caller names none: small for a backend
    # where one row can be a prompt or a slow model; a tabular server sets more.
    BATCH_SIZE: ClassVar[int] = 256

    config: DeploymentConfig
    status: DeploymentStatus

    _session: Any = PrivateAttr(default=None)
    _session_lock: Any = PrivateAttr(default_factory=threading.Lock)
    _detached: bool = PrivateAttr(default=False)
    _recorded: Any = PrivateAttr(default=None)
    # The record of the progressive rollout that made this revision serve (``rollout.py``),
    # in the process that ran it (the deploy step records it as run metadata).
    _rollout: Any = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _live_config_wins(cls, data: Any) -> Any:
        if isinstance(data, dict):
            status = data.get("status")
            live = None
            if isinstance(status, dict):
                live = status.get("live_config")
            elif isinstance(status, DeploymentStatus):
                live = status.live_config
            # Only when loading raw data from the store; on attribute assignment pydantic
            # passes the live objects, which already are right.
            if live and isinstance(data.get("config"), dict):
                data = {**data, "config": live}
        return data

    # ----------------------------------------------------------------- identity and URLs
    @property
    def deployment_name(self) -> str:
        """The deployment's stable name."""
        return self.config.deployment_name

    @property
    def base_url(self) -> str | None:
        """The stable base URL, or None before the first deploy."""
        return self.status.url

    @property
    def prediction_url(self) -> str | None:
        """The URL to send prediction requests to (what `deployed_model_url` records)."""
        return f"{self.status.url}{self.predict_path()}" if self.status.url else None

    def predict_path(self) -> str:
        """The path predictions go to (a flavor with several APIs picks the default one).

        Returns:
            A URL path.
        """
        return self.PREDICT_PATH

    @property
    def healthcheck_url(self) -> str | None:
        """The health request's URL."""
        return f"{self.status.url}{self.config.health_path}" if self.status.url else None

    @property
    def last_rollout(self) -> Any:
        """The record of the progressive rollout this object ran (``rollout.RolloutRecord``),
        or None."""
        return self._rollout

    @property
    def is_detached(self) -> bool:
        """True when this service was rebuilt from an artifact and has no live service row."""
        return self._detached

    @property
    def recorded(self) -> DeploymentService:
        """The service as the artifact it was loaded from recorded it (else itself).

        A service loaded from a past run's artifact is the *live* service when its row still
        exists (current status and revision); this is the revision that run deployed, which
        ``recreate`` deploys again.
        """
        return self._recorded if self._recorded is not None else self

    def seed_from(self, recorded: DeploymentService) -> None:
        """Before a re-creation: take over what keeps the recorded URL (backend-specific).

        Args:
            recorded: the service as a past run recorded it.
        """

    def move_port(self, port: int) -> None:
        """Moves the deployment's URL to another port (``zmd models start NAME --port P``).

        Only backends that own their port (local processes) can; the others refuse.

        Args:
            port: the new public port.

        Raises:
            ConfigurationError: this backend has no port to choose.
        """
        from zenml_model_deployers.errors import ConfigurationError

        raise ConfigurationError(
            f"Deployment '{self.deployment_name}' ({self.FLAVOR}) has no port to choose: its URL "
            "is the backend's.",
            deployment_name=self.deployment_name,
            hint="start it without --port.",
        )

    # ----------------------------------------------------------------- backend hooks
    @abstractmethod
    def provision_revision(self, timeout: float) -> None:
        """Brings up the revision described by ``self.config`` and waits until it is ready.

        For a deployment that already serves (``self.status`` describes the old revision),
        the old revision must keep serving until the new one is ready, then traffic moves
        to it and the old one is retired. On failure the new revision is torn down, the old
        one keeps serving, ``self.status`` still describes it, and DeploymentError is raised.

        Args:
            timeout: seconds to wait for readiness.
        """

    @abstractmethod
    def start_backend(self, timeout: float) -> None:
        """Starts a stopped deployment's recorded revision on the same URL; blocks until ready.

        Guarantee: on return the recorded revision (same config hash) answers at the same
        URL; a running deployment is left as it is; on failure DeploymentError with the
        backend's message, and nothing half-started keeps running.

        Args:
            timeout: seconds.
        """

    @abstractmethod
    def stop_backend(self, timeout: float) -> None:
        """Stops serving; reversible by ``start_backend``. Idempotent.

        Guarantee: on return requests to the URL fail and ``check_status`` is not ACTIVE;
        what ``start_backend`` needs to bring the same revision back on the same URL is kept.

        Args:
            timeout: seconds.
        """

    @abstractmethod
    def delete_backend(self, timeout: float) -> None:
        """Removes everything the backend holds for this deployment. Idempotent.

        Guarantee: on return nothing of it runs or is held (processes, endpoints, resources,
        files) and its URL serves nothing; a deployment already gone is no error. The service
        row is removed by the deployer, not here.

        Args:
            timeout: seconds.
        """

    # ----------------------------------------------------------------- traffic hooks (traffic.py)
    def canary_candidate(self) -> DeploymentConfig | None:
        """The canary's candidate revision, while a canary is in progress.

        Returns:
            Its config, or None.
        """
        if not self.status.canary_config:
            return None
        return type(self.config).model_validate(self.status.canary_config)

    def set_traffic_split(
        self,
        stable: DeploymentConfig,
        candidate: DeploymentConfig | None,
        candidate_percent: int,
        timeout: float,
    ) -> None:
        """Serves ``stable`` and ``candidate`` side by side, ``candidate_percent`` % of requests
        to the candidate; blocks until the backend does. ``candidate=None`` sends all traffic
        to ``stable`` and retires anything else.

        On failure the backend serves what it served before and DeploymentError is raised.

        Args:
            stable: the stable revision.
            candidate: the candidate revision (None: stable only).
            candidate_percent: the candidate's share, 0-100.
            timeout: seconds.
        """
        self.require_traffic_split()
        split = TrafficSplit(
            stable=stable, candidate=candidate, candidate_percent=candidate_percent
        )
        self.route_traffic(split, timeout)

    def route_traffic(self, split: TrafficSplit, timeout: float) -> None:
        """The backend's part of :meth:`set_traffic_split` (same guarantees), once the flavor
        was found able to split traffic: a flavor with ``SUPPORTS_TRAFFIC_SPLIT`` implements
        it. Default: nothing.

        Args:
            split: the revisions and the candidate's share.
            timeout: seconds.
        """

    def adopt_metrics_settings(self, config: DeploymentConfig) -> None:
        """Takes where request metrics are read from (settings outside the config hash, e.g.
        a Prometheus URL) from a newer config, so that a rollout to it reads them where the
        component says now. Default: nothing to adopt.

        Args:
            config: the rollout's candidate config.
        """

    def read_revision_metrics(self, window: float | None = None) -> dict[str, RevisionMetrics]:
        """Request metrics per revision (config hash), as the backend counts them.

        Args:
            window: seconds: the last `window` seconds where the backend keeps a history (the
                local relay; ``window_s`` says what it covered), else cumulative counts.

        Returns:
            config hash -> metrics.

        Raises:
            ConfigurationError: the backend cannot report them.
        """
        from zenml_model_deployers.errors import ConfigurationError

        raise ConfigurationError(
            f"Flavor {self.FLAVOR} cannot report request metrics per revision.",
            deployment_name=self.deployment_name,
        )

    def require_traffic_split(self) -> None:
        """Refuses a canary where the backend cannot split traffic (nothing changes).

        Raises:
            ConfigurationError: ``SUPPORTS_TRAFFIC_SPLIT`` is False.
        """
        from zenml_model_deployers.errors import ConfigurationError

        if not self.SUPPORTS_TRAFFIC_SPLIT:
            raise ConfigurationError(
                f"Flavor {self.FLAVOR} cannot split traffic between two revisions, so "
                f"deployment '{self.deployment_name}' cannot run a canary.",
                deployment_name=self.deployment_name,
                hint="deploy without canary_percent (the update rolls out safely in place).",
            )

    def discard_backend(self, timeout: float) -> None:
        """Removes what a failed first deploy made, keeping only its failure record.

        Called instead of ``delete_backend`` when a new deployment fails before it served:
        nothing half-made may stay, but the error names a log that must still exist. The
        default keeps nothing (``delete_backend``); local backends keep their failed logs.

        Args:
            timeout: seconds.
        """
        self.delete_backend(timeout)

    def format_request(self, data: Any) -> tuple[dict[str, str], bytes]:
        """Turns user data into the backend's request (headers, body).

        Guarantee: a pure function of ``data`` (no I/O); ``predict``, the smoke check, the
        batch steps and the conformance suite's request loops send exactly this body to
        ``prediction_url``.

        Args:
            data: a DataFrame, array, list or dict.

        Returns:
            (headers, body).
        """
        return {"Content-Type": "application/json"}, json.dumps(data).encode()

    def parse_response(self, body: bytes) -> Any:
        """Turns the backend's response body into Python data.

        Guarantee: returns the predictions alone (one per input row where the backend answers
        per row), without the backend's envelope, so that predictions compare across flavors.

        Args:
            body: response body.

        Returns:
            Parsed JSON.
        """
        return json.loads(body)

    # ----------------------------------------------------------------- ZenML service API
    def provision(self) -> None:
        """ZenML's provisioning hook: starts the recorded revision."""
        self.start_backend(timeout=300)

    def deprovision(self, force: bool = False) -> None:
        """ZenML's deprovisioning hook: stops serving (reversible).

        Args:
            force: ignored; stopping is always forceful after a grace period.
        """
        self.stop_backend(timeout=30)

    @abstractmethod
    def check_status(self) -> tuple[ServiceState, str]:
        """Reads the state from the backend (never assumed).

        Guarantee: ACTIVE only while the recorded revision answers requests at the URL; a
        killed process or a deleted endpoint shows at the next call, with the backend's words
        in the message.

        Returns:
            (state, message).
        """

    @abstractmethod
    def get_logs(self, follow: bool = False, tail: int | None = None) -> Generator[str, bool, None]:
        """Yields the serving process's log lines.

        Args:
            follow: keep yielding new lines.
            tail: only the last N lines.
        """

    # ----------------------------------------------------------------- predictions
    def _http(self) -> Any:
        if self._session is None:
            with self._session_lock:
                if self._session is None:
                    import requests

                    s = requests.Session()
                    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=32)
                    s.mount("http://", adapter)
                    s.mount("https://", adapter)
                    self._session = s
        return self._session

    def predict(self, data: Any, timeout: float = 60.0) -> Any:
        """Sends data to the deployed model and returns its predictions.

        Uses one kept-alive HTTP session per service object, so repeated calls cost about
        what a raw kept-alive POST costs.

        Args:
            data: whatever the backend accepts (see the flavor's ``format_request``).
            timeout: seconds.

        Returns:
            The parsed predictions.

        Raises:
            PredictionError: with the backend's error body, if the request fails.
        """
        from zenml_model_deployers.errors import PredictionError

        url = self.prediction_url
        if not url:
            raise PredictionError(
                f"Deployment '{self.deployment_name}' has no URL: it was never deployed.",
                deployment_name=self.deployment_name,
                hint="deploy it first (e.g. `zmd models recreate ...` or run the pipeline).",
            )
        headers, body = self.format_request(data)
        return self._send(url, headers, body, timeout)

    def _send(self, url: str, headers: dict[str, str], body: bytes, timeout: float) -> Any:
        """POSTs a prepared request on the kept-alive session; parses or raises a typed error."""
        import requests

        from zenml_model_deployers.errors import PredictionError

        headers = {**headers, **self.auth_headers()}
        try:
            resp = self._http().post(url, data=body, headers=headers, timeout=timeout)
        except requests.RequestException as e:
            raise PredictionError(
                f"Prediction request to {url} failed: {e}",
                deployment_name=self.deployment_name,
                hint=f"check it serves: `zmd models describe {self.deployment_name}`.",
            ) from e
        if resp.status_code >= 400:
            retry_after = resp.headers.get("Retry-After", "")
            raise PredictionError(
                f"Deployment '{self.deployment_name}' answered HTTP {resp.status_code}.",
                status_code=resp.status_code,
                retry_after=float(retry_after) if retry_after.isdigit() else None,
                deployment_name=self.deployment_name,
                backend_message=resp.text[:4000],
                hint="check the input format the model expects.",
            )
        return self.parse_response(resp.content)

    # ----------------------------------------------------------------- helpers
    def mark_ready(self) -> None:
        """Records the serving revision: config hash, live config, time, ACTIVE state."""
        self.status.config_hash = self.config.config_hash()
        self.status.live_config = self.config.model_dump(mode="json")
        self.status.deployed_at = datetime.now(UTC).isoformat()
        self.status.prediction_url = self.prediction_url
        self.status.update_state(ServiceState.ACTIVE, "")
        self.status.clear_error()
        self.admin_state = ServiceState.ACTIVE

    def curl_example(self) -> str:
        """A ready-to-paste request to the deployment (shown on the artifact's card).

        Flavors whose request format or authentication differs override it.

        Returns:
            A curl command line (placeholders, never credentials).
        """
        return self._curl("<JSON body>")

    def _curl(self, body: str) -> str:
        url = self.prediction_url or "(not deployed)"
        return (
            f"curl -s -X POST {url} -H 'Content-Type: application/json'{self.curl_auth()} "
            f"-d '{body}'"
        )

    def auth_headers(self) -> dict[str, str]:
        """Headers that authenticate requests to the URL (flavors with an API key add them).

        Returns:
            Headers (contain credentials: never log them).
        """
        return {}

    def curl_auth(self) -> str:
        """The curl option that authenticates, naming an environment variable, never a value.

        Returns:
            A curl option starting with a space, or "".
        """
        return ""

    def describe(self) -> dict[str, Any]:
        """The `deployment` run metadata / CLI description of this service.

        Returns:
            A JSON-able dict (no secret values: config stores references only).
        """
        return {
            "flavor": self.FLAVOR,
            "name": self.deployment_name,
            "revision": self.status.revision,
            "service_id": str(self.uuid),
            "model_uri": self.config.model_uri,
            "model_name": self.config.model_name,
            "config_hash": self.status.config_hash or self.config.config_hash(),
            "url": self.prediction_url,
            "health_url": self.healthcheck_url,
            "state": state_word(self.status.state),
            "canary": (
                {
                    "config_hash": candidate.config_hash(),
                    "model_uri": candidate.model_uri,
                    "percent": self.status.canary_percent,
                }
                if (candidate := self.canary_candidate()) is not None
                else None
            ),
        }

    def labels(self) -> dict[str, str]:
        """Labels stored on the service row (searchable in ZenML).

        Returns:
            A dict of strings.
        """
        return {
            "zmd_flavor": self.FLAVOR,
            "zmd_deployment": self.deployment_name,
            "zmd_model": self.config.model_name,
            "zmd_revision": str(self.status.revision),
            "zmd_config_hash": self.status.config_hash,
            "zmd_pipeline": self.config.pipeline_name,
            "zmd_step": self.config.pipeline_step_name,
        }

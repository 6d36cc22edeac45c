"""Everything that talks to Databricks through `databricks-sdk` (imported only here).

The service (service.py) decides *what* to do; this module builds the SDK's request types,
makes the calls (:class:`EndpointHandle`: one serving endpoint's API) and turns Databricks'
errors into our typed errors with Databricks' own words. It takes no service object.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from zenml_model_deployers import secrets
from zenml_model_deployers.errors import (
    ConfigurationError,
    DeploymentError,
    DeploymentExistsError,
    PredictionError,
)

if TYPE_CHECKING:
    from databricks.sdk import WorkspaceClient

    from zenml_model_deployers.flavors.databricks.config import (
        DatabricksDeploymentConfig,
        InferenceTable,
    )
    from zenml_model_deployers.remote import ServingTarget

MANAGED_TAG = "zmd-deployment"
_SCOPE_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def sdk_available() -> None:
    """Refuses early, with the fix, when `databricks-sdk` is not installed.

    Raises:
        ConfigurationError: it is not importable.
    """
    try:
        import databricks.sdk  # noqa: F401
    except ImportError as e:
        raise ConfigurationError(
            f"zmd-databricks needs databricks-sdk, which is not importable: {e}",
            hint="pip install 'zenml-model-deployers[databricks]'.",
        ) from e


def client(config: DatabricksDeploymentConfig) -> WorkspaceClient:
    """A `WorkspaceClient` for the deployment's workspace; credentials resolved now only.

    Args:
        config: the deployment's config (holds the host and secret *references*).

    Returns:
        The client (unified auth: ``pat`` or ``oauth-m2m``).

    Raises:
        ConfigurationError: no credentials are configured.
    """
    sdk_available()
    from databricks.sdk import WorkspaceClient

    if config.token:
        return WorkspaceClient(
            host=config.host, token=secrets.resolve(config.token), auth_type="pat"
        )
    if config.client_id and config.client_secret:
        # The workspace's own OIDC discovery document: found without the host metadata
        # endpoint (which the SDK otherwise needs for M2M, and not every host serves).
        from databricks.sdk.config import Config

        return WorkspaceClient(
            config=Config(
                host=config.host,
                client_id=secrets.resolve(config.client_id),
                client_secret=secrets.resolve(config.client_secret),
                auth_type="oauth-m2m",
                discovery_url=(
                    f"{config.host.rstrip('/')}/oidc/.well-known/oauth-authorization-server"
                ),
            )
        )
    raise ConfigurationError(
        f"Deployment '{config.deployment_name}' has no Databricks credentials.",
        deployment_name=config.deployment_name,
        hint="register the zmd-databricks component with --token='{{secret.token}}' (or "
        "--client_id / --client_secret='{{secret.client_secret}}').",
    )


def error_code(error: BaseException) -> str | None:
    """Databricks' error code of an API error (e.g. ``RESOURCE_DOES_NOT_EXIST``).

    Args:
        error: an exception (ours carry the SDK's error as their cause).

    Returns:
        The code, or None for other errors.
    """
    seen: BaseException | None = error
    while seen is not None:
        code = getattr(seen, "error_code", None)
        if isinstance(code, str) and code:
            return code
        seen = seen.__cause__
    return None


def is_not_found(error: BaseException) -> bool:
    """Tells whether a Databricks error says the object does not exist.

    Args:
        error: an exception.

    Returns:
        True for ``RESOURCE_DOES_NOT_EXIST`` / ``NOT_FOUND``.
    """
    return error_code(error) in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND")


_HINTS = {
    "PERMISSION_DENIED": "grant the token's user or service principal the permission named "
    "above (e.g. EXECUTE on the Unity Catalog model, CAN MANAGE on the endpoint).",
    "UNAUTHENTICATED": "check the token (or the service principal's secret) in the ZenML secret.",
    "INVALID_PARAMETER_VALUE": "fix the setting Databricks names above.",
    "RESOURCE_DOES_NOT_EXIST": "check the Unity Catalog model name and version "
    "(`catalog.schema.model` and a version that exists).",
    "RESOURCE_CONFLICT": "wait until the endpoint's current update finishes, then deploy again.",
}


@contextlib.contextmanager
def dbx_errors(what: str, deployment_name: str) -> Iterator[None]:
    """Turns a Databricks API error into DeploymentError: what failed, then Databricks' words.

    Args:
        what: e.g. "Creating serving endpoint 'iris'".
        deployment_name: for the error.

    Yields:
        Nothing.

    Raises:
        DeploymentError: with Databricks' message (redacted) as the backend message.
    """
    from databricks.sdk.errors.base import DatabricksError

    try:
        yield
    except DatabricksError as e:
        code = getattr(e, "error_code", None) or type(e).__name__
        raise DeploymentError(
            f"{what} failed: Databricks answered {code}.",
            deployment_name=deployment_name,
            backend_message=str(e) or code,
            hint=_HINTS.get(str(code)),
        ) from e
    except OSError as e:
        raise DeploymentError(
            f"{what} failed: the workspace cannot be reached ({type(e).__name__}).",
            deployment_name=deployment_name,
            backend_message=str(e),
            hint="check the component's `host` and the network.",
        ) from e


def scope_name(deployment_name: str) -> str:
    """The Databricks secret scope that holds a deployment's ZenML-secret env values.

    Args:
        deployment_name: the deployment.

    Returns:
        ``zmd-<deployment name>``.
    """
    return _SCOPE_SAFE.sub("-", f"zmd-{deployment_name}")[:128]


def environment_vars(
    w: WorkspaceClient, config: DatabricksDeploymentConfig, scope: str
) -> dict[str, str]:
    """The served entity's `environment_vars`: plain values and Databricks ``{{secrets/..}}``
    references as given; ZenML secret references stored in the deployment's Databricks secret
    scope (resolved now) and sent as ``{{secrets/<scope>/<VAR>}}`` references, so no value
    travels in the endpoint's config.

    Args:
        w: the client.
        config: the revision.
        scope: the deployment's secret scope.

    Returns:
        The env vars to send.
    """
    out: dict[str, str] = {}
    created = False
    for key, value in config.env.items():
        if not secrets.is_secret_reference(value):
            out[key] = value
            continue
        resolved = secrets.resolve(value)
        if not created:
            with dbx_errors(f"Creating secret scope '{scope}'", config.deployment_name):
                try:
                    w.secrets.create_scope(scope)
                except Exception as e:
                    if error_code(e) != "RESOURCE_ALREADY_EXISTS":
                        raise
            created = True
        # One key per revision: a canary's candidate must not overwrite the stable's value.
        secret_key = f"{key}-{config.config_hash()[:8]}"
        with dbx_errors(f"Storing {key} in secret scope '{scope}'", config.deployment_name):
            w.secrets.put_secret(scope, secret_key, string_value=resolved)
        out[key] = "{{secrets/" + scope + "/" + secret_key + "}}"
    return out


def check_model_version(w: WorkspaceClient, config: DatabricksDeploymentConfig) -> None:
    """Reads the Unity Catalog model version: an unknown one (or one the credentials may not
    use) fails here, with Databricks' words, before the endpoint is touched.

    Args:
        w: the client.
        config: the revision.
    """
    with dbx_errors(
        f"Reading Unity Catalog model version {config.entity_name}/{config.entity_version}",
        config.deployment_name,
    ):
        w.model_versions.get(config.entity_name, int(config.entity_version))


def served_entities(w: WorkspaceClient, target: ServingTarget, scope: str) -> tuple[list[Any], Any]:
    """The SDK's `served_entities` and `traffic_config` for a target.

    Args:
        w: the client (secret env values are stored through it).
        target: the stable revision and the canary's candidate.
        scope: the deployment's secret scope.

    Returns:
        (served entities, traffic config).
    """
    from databricks.sdk.service.serving import (
        Route,
        ServedEntityInput,
        ServingModelWorkloadType,
        TrafficConfig,
    )

    entities, routes = [], []
    for cfg, percent in _revisions(target):
        entities.append(
            ServedEntityInput(
                name=cfg.served_entity_name,
                entity_name=cfg.entity_name,
                entity_version=cfg.entity_version,
                workload_size=cfg.workload_size,
                workload_type=(
                    ServingModelWorkloadType(cfg.workload_type) if cfg.workload_type else None
                ),
                scale_to_zero_enabled=cfg.scale_to_zero_enabled,
                environment_vars=environment_vars(w, cfg, scope) or None,
            )
        )
        routes.append(Route(served_entity_name=cfg.served_entity_name, traffic_percentage=percent))
    return entities, TrafficConfig(routes=routes)


def _revisions(target: ServingTarget) -> list[tuple[DatabricksDeploymentConfig, int]]:
    stable: Any = target.stable
    if target.candidate is None or target.candidate_percent == 0:
        return [(stable, 100)]
    candidate: Any = target.candidate
    return [(stable, 100 - target.candidate_percent), (candidate, target.candidate_percent)]


def expected_routes(target: ServingTarget) -> dict[str, int]:
    """What the endpoint's routes must say for a target: served entity name -> percent.

    Args:
        target: the target.

    Returns:
        The routes.
    """
    return {cfg.served_entity_name: pct for cfg, pct in _revisions(target)}


def endpoint_tags(config: DatabricksDeploymentConfig) -> dict[str, str]:
    """The endpoint's tags: the user's plus the one that marks it as this deployment's.

    Args:
        config: the stable revision.

    Returns:
        key -> value.
    """
    return {**config.tags, MANAGED_TAG: config.deployment_name}


def query_kwargs(body: dict[str, Any]) -> dict[str, Any]:
    """Turns a request body into `serving_endpoints.query` keyword arguments (SDK types).

    Args:
        body: one of the documented input forms.

    Returns:
        Keyword arguments.
    """
    from databricks.sdk.service.serving import ChatMessage, DataframeSplitInput

    kwargs = dict(body)
    if "dataframe_split" in kwargs:
        kwargs["dataframe_split"] = DataframeSplitInput.from_dict(kwargs["dataframe_split"])
    if "messages" in kwargs:
        kwargs["messages"] = [ChatMessage.from_dict(m) for m in kwargs["messages"]]
    return kwargs


def inference_table_config(table: InferenceTable | None) -> Any:
    """The SDK's ``AiGatewayInferenceTableConfig`` for a table (None: turned off).

    Args:
        table: the config's inference table.

    Returns:
        The SDK object.
    """
    from databricks.sdk.service.serving import AiGatewayInferenceTableConfig

    if table is None:
        return AiGatewayInferenceTableConfig(enabled=False)
    return AiGatewayInferenceTableConfig(
        enabled=True,
        catalog_name=table.catalog_name,
        schema_name=table.schema_name,
        table_name_prefix=table.table_name_prefix or None,
    )


@contextlib.contextmanager
def unless_missing() -> Iterator[None]:
    """Lets a ``DeploymentError`` saying the object does not exist pass (deletes are
    idempotent).

    Yields:
        Nothing.
    """
    try:
        yield
    except DeploymentError as e:
        if not is_not_found(e):
            raise


def enum_value(value: Any) -> str | None:
    """An SDK enum's value (or the value itself; None stays None).

    Args:
        value: an SDK enum member, a string or None.

    Returns:
        The string.
    """
    if value is None:
        return None
    return str(getattr(value, "value", value))


@dataclass(frozen=True)
class EndpointHandle:
    """One deployment's serving endpoint: every API call about it, errors mapped.

    Attributes:
        workspace: the client (credentials resolved).
        name: the endpoint's name.
        deployment_name: the deployment, for errors.
        scope: the deployment's Databricks secret scope.
    """

    workspace: WorkspaceClient
    name: str
    deployment_name: str
    scope: str

    def _errors(self, what: str) -> contextlib.AbstractContextManager[None]:
        return dbx_errors(what, self.deployment_name)

    def get(self) -> Any:
        """Reads the endpoint (one ``serving_endpoints.get``).

        Returns:
            The SDK's ``ServingEndpointDetailed`` (a missing one raises: ``is_not_found``).
        """
        with self._errors(f"Reading serving endpoint '{self.name}'"):
            return self.workspace.serving_endpoints.get(self.name)

    def create(self, target: ServingTarget) -> None:
        """Creates the endpoint serving ``target``; refuses a name another endpoint holds.

        Args:
            target: what to serve.

        Raises:
            DeploymentExistsError: an endpoint with that name exists (never adopted).
        """
        from databricks.sdk.service.serving import (
            AiGatewayConfig,
            EndpointCoreConfigInput,
            EndpointTag,
        )

        cfg: Any = target.stable
        entities, traffic = served_entities(self.workspace, target, self.scope)
        gateway = None
        if cfg.inference_table is not None:
            gateway = AiGatewayConfig(
                inference_table_config=inference_table_config(cfg.inference_table)
            )
        try:
            with self._errors(f"Creating serving endpoint '{self.name}'"):
                self.workspace.serving_endpoints.create(
                    self.name,
                    config=EndpointCoreConfigInput(
                        name=self.name, served_entities=entities, traffic_config=traffic
                    ),
                    tags=[EndpointTag(key=k, value=v) for k, v in endpoint_tags(cfg).items()],
                    ai_gateway=gateway,
                )
        except DeploymentError as e:
            if error_code(e) == "RESOURCE_ALREADY_EXISTS":
                raise DeploymentExistsError(
                    f"A serving endpoint named '{self.name}' already exists in {cfg.host}, and "
                    "no zmd deployment created it: zmd never takes over an endpoint it did not "
                    "make.",
                    deployment_name=self.deployment_name,
                    backend_message=e.backend_message,
                    hint=f"deploy under another deployment_name, or delete endpoint "
                    f"'{self.name}' in the workspace if it is yours to remove.",
                ) from e
            raise

    def update(self, target: ServingTarget, previous: ServingTarget) -> None:
        """Updates the endpoint's served entities and routes (and its tags and inference
        table when they changed).

        Args:
            target: what to serve.
            previous: what served until now.
        """
        from databricks.sdk.service.serving import EndpointTag

        entities, traffic = served_entities(self.workspace, target, self.scope)
        with self._errors(f"Updating serving endpoint '{self.name}'"):
            self.workspace.serving_endpoints.update_config(
                self.name, served_entities=entities, traffic_config=traffic
            )
        new: Any = target.stable
        old: Any = previous.stable
        new_tags, old_tags = endpoint_tags(new), endpoint_tags(old)
        if new_tags != old_tags:
            with self._errors(f"Updating tags of serving endpoint '{self.name}'"):
                self.workspace.serving_endpoints.patch(
                    self.name,
                    add_tags=[EndpointTag(key=k, value=v) for k, v in new_tags.items()],
                    delete_tags=[k for k in old_tags if k not in new_tags] or None,
                )
        if new.inference_table != old.inference_table:
            with self._errors(f"Setting the inference table of endpoint '{self.name}'"):
                self.workspace.serving_endpoints.put_ai_gateway(
                    self.name, inference_table_config=inference_table_config(new.inference_table)
                )

    def delete(self) -> None:
        """Deletes the endpoint; a missing one is fine."""
        with unless_missing(), self._errors(f"Deleting serving endpoint '{self.name}'"):
            self.workspace.serving_endpoints.delete(self.name)

    def delete_scope(self) -> None:
        """Deletes the deployment's secret scope; a missing one is fine."""
        with unless_missing(), self._errors(f"Deleting secret scope '{self.scope}'"):
            self.workspace.secrets.delete_scope(self.scope)

    def entity_logs(self, entity: str) -> str:
        """A served entity's server logs (a snapshot).

        Args:
            entity: the served entity's name.

        Returns:
            The log text.
        """
        with self._errors(f"Reading logs of served entity '{entity}'"):
            return str(self.workspace.serving_endpoints.logs(self.name, entity).logs or "")

    def request_counts(self) -> dict[str, tuple[int, int]]:
        """Requests and errors per served entity (``export_metrics``: cumulative counters).

        Returns:
            served entity name -> (requests, errors).
        """
        with self._errors(f"Reading metrics of endpoint '{self.name}'"):
            resp = self.workspace.serving_endpoints.export_metrics(self.name)
        contents = resp.contents.read() if resp.contents is not None else b""
        text = contents.decode() if isinstance(contents, bytes) else str(contents)
        return parse_metrics(text)

    def query(self, body: dict[str, Any]) -> Any:
        """Queries the endpoint through ``serving_endpoints.query``.

        Args:
            body: the request body (see ``query_kwargs``).

        Returns:
            ``predictions`` (or ``choices`` / ``outputs`` / ``data`` for other endpoint kinds).

        Raises:
            PredictionError: Databricks answered an error (its message included).
        """
        from databricks.sdk.errors.base import DatabricksError

        try:
            resp = self.workspace.serving_endpoints.query(self.name, **query_kwargs(body))
        except DatabricksError as e:
            raise PredictionError(
                f"Endpoint '{self.name}' answered "
                f"{getattr(e, 'error_code', None) or type(e).__name__}.",
                deployment_name=self.deployment_name,
                backend_message=str(e),
                hint="check the input format the model expects "
                f"(`zmd models describe {self.deployment_name}`).",
            ) from e
        except OSError as e:
            raise PredictionError(
                f"Querying endpoint '{self.name}' failed: {type(e).__name__}.",
                deployment_name=self.deployment_name,
                backend_message=str(e),
            ) from e
        if resp.predictions is not None:
            return resp.predictions
        if resp.choices is not None:
            return [c.as_dict() for c in resp.choices]
        if resp.outputs is not None:
            return resp.outputs
        if resp.data is not None:
            return [d.as_dict() for d in resp.data]
        return resp.as_dict()


def entity_message(ep: Any) -> str:
    """Databricks' message about an endpoint's served entities, failures first (pending
    config first).

    Args:
        ep: the endpoint, as read.

    Returns:
        One line per entity with a message.
    """
    messages: list[str] = []
    for cfg in (ep.pending_config, ep.config):
        for entity in (cfg.served_entities if cfg is not None else None) or []:
            st = entity.state
            if st is None or not st.deployment_state_message:
                continue
            text = f"{entity.name}: {st.deployment_state_message}"
            if enum_value(st.deployment) == "DEPLOYMENT_FAILED":
                messages.insert(0, text)
            else:
                messages.append(text)
    return "\n".join(messages)


def served_routes(ep: Any) -> dict[str, int]:
    """The routes of an endpoint's current config: served entity name -> percent.

    Args:
        ep: the endpoint, as read.

    Returns:
        The routes (empty without a config).
    """
    if ep.config is None or ep.config.traffic_config is None:
        return {}
    return {
        r.served_entity_name or r.served_model_name: r.traffic_percentage
        for r in ep.config.traffic_config.routes or []
    }


_METRIC = re.compile(
    r'^(?P<metric>[a-z_]+)\{[^}]*served_entity_name="(?P<entity>[^"]+)"[^}]*\}\s+(?P<value>[0-9.eE+-]+)'
)


def parse_metrics(text: str) -> dict[str, tuple[int, int]]:
    """Request and error counters per served entity from Prometheus text.

    Args:
        text: what ``export_metrics`` returned.

    Returns:
        served entity name -> (requests, 4xx + 5xx errors).
    """
    out: dict[str, tuple[int, int]] = {}
    for line in text.splitlines():
        m = _METRIC.match(line.strip())
        if not m:
            continue
        req, err = out.get(m.group("entity"), (0, 0))
        value = int(float(m.group("value")))
        if m.group("metric") == "request_count_total":
            req += value
        elif m.group("metric") in ("request_4xx_count_total", "request_5xx_count_total"):
            err += value
        out[m.group("entity")] = (req, err)
    return out

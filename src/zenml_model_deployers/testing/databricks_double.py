"""An offline double of Databricks Model Serving (and the Unity Catalog reads it needs).

:class:`DatabricksDouble` is a real HTTP server on 127.0.0.1 implementing the REST paths
``databricks-sdk``'s ``WorkspaceClient`` calls for model serving::

    GET    /.well-known/databricks-config                     404 (no host metadata)
    GET    /oidc/.well-known/oauth-authorization-server       OAuth M2M discovery
    POST   /oidc/v1/token                                     client_credentials -> token
    GET    /api/2.0/serving-endpoints                         list
    POST   /api/2.0/serving-endpoints                         create
    GET    /api/2.0/serving-endpoints/{name}                  get
    DELETE /api/2.0/serving-endpoints/{name}                  delete
    PUT    /api/2.0/serving-endpoints/{name}/config           update_config
    PATCH  /api/2.0/serving-endpoints/{name}/tags             patch (tags)
    PUT    /api/2.0/serving-endpoints/{name}/ai-gateway       put_ai_gateway
    GET    /api/2.0/serving-endpoints/{name}/metrics          export_metrics (Prometheus text)
    GET    /api/2.0/serving-endpoints/{name}/served-models/{m}/logs        logs
    GET    /api/2.0/serving-endpoints/{name}/served-models/{m}/build-logs  build_logs
    POST   /serving-endpoints/{name}/invocations              query
    GET    /api/2.1/unity-catalog/models/{full_name}/versions/{v}          model_versions.get
    POST   /api/2.0/secrets/scopes/create | /scopes/delete | /put, GET /scopes/list

States move like Databricks': a new endpoint is ``NOT_READY`` / ``IN_PROGRESS`` until its
served entities are deployed, then ``READY`` / ``NOT_UPDATING``; an update keeps the current
config serving while the ``pending_config`` deploys (``IN_PROGRESS``), then swaps it in; a
served entity that cannot deploy ends the update as ``UPDATE_FAILED`` with the entity's
``deployment_state_message`` (the previous config keeps serving). A config change while one
is in progress is refused (``RESOURCE_CONFLICT``).

Invocations are answered by the real model: each served entity loads its model version from a
local MLflow registry standing in for Unity Catalog (``mlflow.pyfunc``), and requests are
split between the entities by the traffic routes. The served model's name comes back in the
``served-model-name`` header, as on Databricks.

Where the stand-in registry differs from Unity Catalog: model names are any MLflow registry
names (three-level names are not enforced; there are no catalogs, schemas or grants -- a
permission failure is injected with ``forbidden_models``); versions are read with MLflow's
client, not UC's REST API, and any MLflow model loads (UC requires a signature); aliases,
lineage and model version status other than READY are not modelled. Errors use Databricks'
error codes with messages written after Databricks' own, not copied from a live workspace.

Use it in your own tests::

    from databricks.sdk import WorkspaceClient
    from zenml_model_deployers.testing.databricks_double import DatabricksDouble

    with DatabricksDouble(registry_uri="sqlite:///registry.db", tokens={"dapi-test"}) as dbx:
        w = WorkspaceClient(host=dbx.url, token="dapi-test", auth_type="pat")
        ...  # or register a zmd-databricks component with host=dbx.url
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from zenml_model_deployers.testing import databricks_unity_catalog as unity_catalog
from zenml_model_deployers.testing.databricks_unity_catalog import ApiError, Entity
from zenml_model_deployers.testing.local_server import JSONHandler, ServedDouble

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,63}$")

WORKLOAD_SIZES = ("Small", "Medium", "Large")


@dataclass
class Config:
    """An endpoint config (current or pending)."""

    version: int
    entities: dict[str, Entity]
    routes: dict[str, int]
    started: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        """The config as Databricks returns it."""
        return {
            "config_version": self.version,
            "served_entities": [
                {
                    **e.spec,
                    "state": {
                        "deployment": e.deployment,
                        "deployment_state_message": e.message,
                    },
                    "creator": "zmd-double",
                    "creation_timestamp": int(self.started * 1000),
                }
                for e in self.entities.values()
            ],
            "traffic_config": {
                "routes": [
                    {"served_entity_name": n, "served_model_name": n, "traffic_percentage": p}
                    for n, p in self.routes.items()
                ]
            },
            "start_time": int(self.started * 1000),
        }


@dataclass
class Endpoint:
    """A serving endpoint as the double holds it (tests read it through ``endpoint()``)."""

    name: str
    id: str
    creator: str
    created: float
    tags: dict[str, str]
    ai_gateway: dict[str, Any]
    config: Config | None = None
    pending: Config | None = None
    ready: str = "NOT_READY"
    config_update: str = "IN_PROGRESS"
    updates: int = 0

    def to_json(self) -> dict[str, Any]:
        """The endpoint as ``GET /api/2.0/serving-endpoints/{name}`` returns it."""
        out: dict[str, Any] = {
            "name": self.name,
            "id": self.id,
            "creator": self.creator,
            "creation_timestamp": int(self.created * 1000),
            "last_updated_timestamp": int(time.time() * 1000),
            "state": {"ready": self.ready, "config_update": self.config_update},
            "tags": [{"key": k, "value": v} for k, v in self.tags.items()],
            "permission_level": "CAN_MANAGE",
            "route_optimized": False,
        }
        if self.ai_gateway:
            out["ai_gateway"] = self.ai_gateway
        if self.config is not None:
            out["config"] = self.config.to_json()
        if self.pending is not None:
            out["pending_config"] = self.pending.to_json()
        return out


class DatabricksDouble(ServedDouble):
    """The double: a server, its endpoints, secrets, request log and fault injection.

    Attributes:
        registry_uri: the MLflow registry standing in for Unity Catalog.
        tokens: personal access tokens it accepts.
        clients: OAuth service principals it accepts (client id -> secret).
        update_delay: seconds before a config's entities start deploying.
        forbidden_models: UC model names the caller may not use (``PERMISSION_DENIED``).
        available_workload_types: workload types this "workspace" offers.
        fail_next_update: a message; the next config deploy fails with it (then cleared).
        slow_next_update: seconds; the next config deploy waits this long instead of
            ``update_delay`` (then cleared): one slow update, whenever its request comes.
        requests: the request log (method, path, headers without ``Authorization``, body).
    """

    def __init__(
        self,
        registry_uri: str,
        tokens: set[str] | None = None,
        clients: dict[str, str] | None = None,
        update_delay: float = 0.3,
        forbidden_models: set[str] | None = None,
        available_workload_types: tuple[str, ...] = ("CPU", "GPU_SMALL"),
        seed: int = 7,
    ) -> None:
        """Configures the double (``start`` or ``with`` runs it).

        Args:
            registry_uri: see the class attributes.
            tokens: see the class attributes.
            clients: see the class attributes.
            update_delay: see the class attributes.
            forbidden_models: see the class attributes.
            available_workload_types: see the class attributes.
            seed: seed of the route picks (reproducible splits).
        """
        self.registry_uri = registry_uri
        self.tokens = set(tokens or ())
        self.clients = dict(clients or {})
        self.update_delay = update_delay
        self.forbidden_models = set(forbidden_models or ())
        self.available_workload_types = available_workload_types
        self.fail_next_update: str | None = None
        self.slow_next_update: float | None = None
        self.requests: list[dict[str, Any]] = []
        self._oauth_tokens: set[str] = set()
        self._endpoints: dict[str, Endpoint] = {}
        self._secrets: dict[str, dict[str, str]] = {}
        self._lock = threading.RLock()
        self._rng = random.Random(seed)
        self._workers: list[threading.Thread] = []

    THREAD_NAME = "databricks-double"

    # ----------------------------------------------------------------- running
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        return _make_handler(self)

    def close(self) -> None:
        """Stops the server and waits for deploying workers (bounded)."""
        super().close()
        for t in self._workers:
            t.join(timeout=30)

    @property
    def url(self) -> str:
        """The workspace URL to give as ``host``."""
        return self.server_url

    # ----------------------------------------------------------------- what tests read
    def endpoint(self, name: str) -> dict[str, Any] | None:
        """The endpoint's JSON as the API returns it (None if it does not exist).

        Args:
            name: the endpoint's name.

        Returns:
            The JSON, or None.
        """
        with self._lock:
            ep = self._endpoints.get(name)
            return ep.to_json() if ep else None

    def names(self) -> list[str]:
        """The endpoints that exist.

        Returns:
            Their names.
        """
        with self._lock:
            return sorted(self._endpoints)

    def entity_env(self, endpoint: str, entity: str) -> dict[str, str]:
        """The environment a served entity's model received (secret references resolved).

        Args:
            endpoint: the endpoint.
            entity: the served entity.

        Returns:
            Its environment.
        """
        with self._lock:
            ep = self._endpoints[endpoint]
            assert ep.config is not None
            return dict(ep.config.entities[entity].env)

    def put_secret(self, scope: str, key: str, value: str) -> None:
        """Stores a Databricks secret (as `databricks secrets put-secret` would).

        Args:
            scope: the scope (created if missing).
            key: the key.
            value: the value.
        """
        with self._lock:
            self._secrets.setdefault(scope, {})[key] = value

    def secret_scopes(self) -> list[str]:
        """The secret scopes that exist.

        Returns:
            Their names.
        """
        with self._lock:
            return sorted(self._secrets)

    def request_log_text(self) -> str:
        """Every request the double received, without the ``Authorization`` header.

        Returns:
            One line of JSON per request.
        """
        with self._lock:
            return "\n".join(json.dumps(r, sort_keys=True) for r in self.requests)

    def create_foreign_endpoint(self, name: str) -> None:
        """Creates a ready endpoint as another user would (no zmd tag), serving nothing.

        Args:
            name: its name.
        """
        with self._lock:
            self._endpoints[name] = Endpoint(
                name=name,
                id=uuid.uuid4().hex,
                creator="someone-else@example.com",
                created=time.time(),
                tags={"team": "other"},
                ai_gateway={},
                config=Config(version=1, entities={}, routes={}),
                ready="READY",
                config_update="NOT_UPDATING",
            )

    def delete_endpoint(self, name: str) -> None:
        """Deletes an endpoint as its owner would (a missing one is fine).

        Args:
            name: its name.
        """
        with self._lock:
            self._endpoints.pop(name, None)

    # ----------------------------------------------------------------- HTTP dispatch
    def handle(
        self, method: str, path: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        """Answers one request.

        Args:
            method: HTTP method.
            path: path with query.
            headers: request headers.
            raw: request body.

        Returns:
            (status, JSON-able body or bytes, extra response headers).
        """
        parsed = urlparse(path)
        route = unquote(parsed.path)
        with self._lock:
            self.requests.append(
                {
                    "method": method,
                    "path": path,
                    "headers": {k: v for k, v in headers.items() if k.lower() != "authorization"},
                    "body": raw.decode(errors="replace"),
                }
            )
        try:
            if route == "/.well-known/databricks-config":
                raise ApiError(404, "NOT_FOUND", "No host metadata on this workspace.")
            if route == "/oidc/.well-known/oauth-authorization-server":
                return (
                    200,
                    {
                        "issuer": f"{self.url}/oidc",
                        "authorization_endpoint": f"{self.url}/oidc/v1/authorize",
                        "token_endpoint": f"{self.url}/oidc/v1/token",
                    },
                    {},
                )
            if route == "/oidc/v1/token" and method == "POST":
                return 200, self._issue_token(headers, raw), {}
            self._authenticate(headers.get("Authorization") or headers.get("authorization"))
            body = json.loads(raw) if raw.strip() else {}
            return self._route(method, route, parse_qs(parsed.query), body)
        except ApiError as e:
            return e.status, {"error_code": e.code, "message": e.message}, {}

    def _issue_token(self, headers: dict[str, str], raw: bytes) -> dict[str, Any]:
        import base64

        auth = headers.get("Authorization") or headers.get("authorization") or ""
        form = parse_qs(raw.decode())
        client_id = client_secret = ""
        if auth.startswith("Basic "):
            client_id, _, client_secret = base64.b64decode(auth[6:]).decode().partition(":")
        else:
            client_id = (form.get("client_id") or [""])[0]
            client_secret = (form.get("client_secret") or [""])[0]
        if not client_id or self.clients.get(client_id) != client_secret:
            raise ApiError(401, "invalid_client", "Client authentication failed.")
        token = f"dbx-oauth-{uuid.uuid4().hex}"
        with self._lock:
            self._oauth_tokens.add(token)
        return {"access_token": token, "token_type": "Bearer", "expires_in": 3600}

    def _authenticate(self, header: str | None) -> None:
        token = header[7:] if header and header.startswith("Bearer ") else None
        if token is None or (token not in self.tokens and token not in self._oauth_tokens):
            raise ApiError(401, "UNAUTHENTICATED", "Invalid access token.")

    def _route(
        self, method: str, route: str, query: dict[str, list[str]], body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        parts = route.strip("/").split("/")
        if route.startswith("/serving-endpoints/") and parts[-1] == "invocations":
            return self._invoke(parts[1], body)
        if route.startswith("/api/2.1/unity-catalog/models/") and len(parts) == 7:
            mv = self._check_model(parts[4], parts[6])
            return 200, unity_catalog.model_version_json(parts[4], mv), {}
        if route.startswith("/api/2.0/secrets/"):
            return 200, self._secrets_api(method, parts[3:], body), {}
        if parts[:3] != ["api", "2.0", "serving-endpoints"]:
            raise ApiError(404, "ENDPOINT_NOT_FOUND", f"No API found for '{method} {route}'.")
        rest = parts[3:]
        if not rest:
            if method == "GET":
                with self._lock:
                    return (
                        200,
                        {"endpoints": [e.to_json() for e in self._endpoints.values()]},
                        {},
                    )
            if method == "POST":
                return 200, self._create(body), {}
        name = rest[0]
        if len(rest) == 1:
            if method == "GET":
                return 200, self._require(name).to_json(), {}
            if method == "DELETE":
                with self._lock:
                    self._require(name)
                    del self._endpoints[name]
                return 200, {}, {}
        sub = rest[1] if len(rest) > 1 else ""
        if sub == "config" and method == "PUT":
            return 200, self._update(name, body), {}
        if sub == "tags" and method == "PATCH":
            return 200, self._patch_tags(name, body), {}
        if sub == "ai-gateway" and method == "PUT":
            with self._lock:
                ep = self._require(name)
                ep.ai_gateway = dict(body)
                return 200, dict(body), {}
        if sub == "metrics" and method == "GET":
            return 200, self._metrics(name).encode(), {"Content-Type": "text/plain"}
        if sub == "served-models" and len(rest) == 4 and rest[3] in ("logs", "build-logs"):
            return 200, {"logs": self._logs(name, rest[2])}, {}
        raise ApiError(404, "ENDPOINT_NOT_FOUND", f"No API found for '{method} {route}'.")

    def _require(self, name: str) -> Endpoint:
        ep = self._endpoints.get(name)
        if ep is None:
            raise ApiError(
                404,
                "RESOURCE_DOES_NOT_EXIST",
                f"Endpoint with name '{name}' does not exist.",
            )
        return ep

    # ----------------------------------------------------------------- Unity Catalog stand-in
    def _check_model(self, name: str, version: str) -> Any:
        return unity_catalog.check_model(self.registry_uri, self.forbidden_models, name, version)

    # ----------------------------------------------------------------- secrets
    def _secrets_api(self, method: str, parts: list[str], body: dict[str, Any]) -> Any:
        with self._lock:
            if parts == ["scopes", "create"]:
                scope = body["scope"]
                if scope in self._secrets:
                    raise ApiError(400, "RESOURCE_ALREADY_EXISTS", f"Scope {scope} already exists!")
                self._secrets[scope] = {}
                return {}
            if parts == ["scopes", "delete"]:
                if body["scope"] not in self._secrets:
                    raise ApiError(
                        404, "RESOURCE_DOES_NOT_EXIST", f"Scope {body['scope']} does not exist!"
                    )
                del self._secrets[body["scope"]]
                return {}
            if parts == ["scopes", "list"]:
                return {"scopes": [{"name": s} for s in self._secrets]}
            if parts == ["put"]:
                scope = body["scope"]
                if scope not in self._secrets:
                    raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Scope {scope} does not exist!")
                self._secrets[scope][body["key"]] = body.get("string_value", "")
                return {}
        raise ApiError(404, "ENDPOINT_NOT_FOUND", f"No API found for secrets/{'/'.join(parts)}.")

    # ----------------------------------------------------------------- serving endpoints
    def _validate(self, config: dict[str, Any]) -> Config:
        entities = config.get("served_entities") or []
        if not entities:
            raise ApiError(
                400, "INVALID_PARAMETER_VALUE", "The endpoint config must have served entities."
            )
        specs: dict[str, dict[str, Any]] = {}
        for spec in entities:
            name = (
                spec.get("name") or f"{spec['entity_name'].split('.')[-1]}-{spec['entity_version']}"
            )
            spec = {**spec, "name": name}
            if name in specs:
                raise ApiError(
                    400, "INVALID_PARAMETER_VALUE", f"Served entity name '{name}' is not unique."
                )
            size = spec.get("workload_size", "Small")
            if size not in WORKLOAD_SIZES:
                raise ApiError(
                    400,
                    "INVALID_PARAMETER_VALUE",
                    f"Workload size '{size}' is invalid. Valid sizes: {', '.join(WORKLOAD_SIZES)}.",
                )
            wtype = spec.get("workload_type", "CPU")
            if wtype not in self.available_workload_types:
                raise ApiError(
                    400,
                    "INVALID_PARAMETER_VALUE",
                    f"Workload type '{wtype}' is not available in this workspace. Available "
                    f"workload types: {', '.join(self.available_workload_types)}.",
                )
            self._check_model(spec["entity_name"], spec["entity_version"])
            specs[name] = spec
        routes_in = (config.get("traffic_config") or {}).get("routes")
        if routes_in is None:
            routes = {n: 100 // len(specs) for n in specs}
        else:
            routes = {}
            for r in routes_in:
                target = r.get("served_entity_name") or r.get("served_model_name")
                if target not in specs:
                    raise ApiError(
                        400,
                        "INVALID_PARAMETER_VALUE",
                        f"Route refers to served entity '{target}', which is not in the config.",
                    )
                routes[target] = int(r["traffic_percentage"])
            if sum(routes.values()) != 100:
                raise ApiError(
                    400,
                    "INVALID_PARAMETER_VALUE",
                    f"Traffic percentages must add up to 100 (got {sum(routes.values())}).",
                )
        return Config(
            version=0, entities={n: Entity(spec=s) for n, s in specs.items()}, routes=routes
        )

    def _create(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("name", "")
        if not _NAME.match(name):
            raise ApiError(
                400,
                "INVALID_PARAMETER_VALUE",
                f"Endpoint name '{name}' is invalid: use at most 63 letters, digits, '-' and '_'.",
            )
        with self._lock:
            if name in self._endpoints:
                raise ApiError(
                    409, "RESOURCE_ALREADY_EXISTS", f"Endpoint with name '{name}' already exists."
                )
        pending = self._validate(body.get("config") or {})
        with self._lock:
            ep = Endpoint(
                name=name,
                id=uuid.uuid4().hex,
                creator="zmd-double-user",
                created=time.time(),
                tags={t["key"]: t.get("value", "") for t in body.get("tags") or []},
                ai_gateway=dict(body.get("ai_gateway") or {}),
            )
            self._endpoints[name] = ep
            self._start_deploy(ep, pending)
            return ep.to_json()

    def _update(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            ep = self._require(name)
            if ep.config_update == "IN_PROGRESS":
                raise ApiError(
                    409,
                    "RESOURCE_CONFLICT",
                    f"Endpoint '{name}' is currently being updated. Wait until the update "
                    "completes, then try again.",
                )
        pending = self._validate(body)
        with self._lock:
            ep = self._require(name)
            self._start_deploy(ep, pending)
            return ep.to_json()

    def _patch_tags(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            ep = self._require(name)
            for key in body.get("delete_tags") or []:
                ep.tags.pop(key, None)
            for t in body.get("add_tags") or []:
                ep.tags[t["key"]] = t.get("value", "")
            return {"tags": [{"key": k, "value": v} for k, v in ep.tags.items()]}

    def _start_deploy(self, ep: Endpoint, pending: Config) -> None:
        ep.updates += 1
        pending.version = (ep.config.version if ep.config else 0) + 1
        ep.pending = pending
        ep.config_update = "IN_PROGRESS"
        failure, self.fail_next_update = self.fail_next_update, None
        delay, self.slow_next_update = self.slow_next_update, None
        worker = threading.Thread(
            target=self._deploy,
            args=(ep, pending, failure, self.update_delay if delay is None else delay),
            daemon=True,
            name=f"dbx-{ep.name}",
        )
        self._workers = [t for t in self._workers if t.is_alive()] + [worker]
        worker.start()

    def _deploy(self, ep: Endpoint, pending: Config, failure: str | None, delay: float) -> None:
        """Deploys a pending config's entities (loads their models), then swaps it in."""
        time.sleep(delay)
        current = ep.config
        error = ""
        for entity in pending.entities.values():
            old = current.entities.get(entity.name) if current else None
            if old is not None and old.same_spec(entity.spec) and old.model is not None:
                entity.model, entity.env, entity.logs = old.model, old.env, old.logs
                entity.deployment, entity.message = "DEPLOYMENT_READY", old.message
                continue
            error = failure or self._load(entity)
            failure = None
            if error:
                entity.deployment, entity.message = "DEPLOYMENT_FAILED", error
                break
            entity.deployment = "DEPLOYMENT_READY"
            entity.message = "Served entity creation succeeded."
        with self._lock:
            if self._endpoints.get(ep.name) is not ep or ep.pending is not pending:
                return  # deleted (or replaced) meanwhile
            if error:
                ep.config_update = "UPDATE_FAILED"
                return
            ep.config, ep.pending = pending, None
            ep.ready, ep.config_update = "READY", "NOT_UPDATING"

    def _load(self, entity: Entity) -> str:
        """Loads an entity's model; returns Databricks' kind of failure message, or ''."""
        return unity_catalog.load_entity(self.registry_uri, entity, self._secret)

    def _secret(self, scope: str, key: str) -> str | None:
        with self._lock:
            return self._secrets.get(scope, {}).get(key)

    # ----------------------------------------------------------------- invocations
    def _invoke(self, name: str, body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        with self._lock:
            ep = self._require(name)
            if ep.config is None or ep.ready != "READY" or not ep.config.routes:
                raise ApiError(
                    400, "BAD_REQUEST", f"Endpoint '{name}' is not ready to serve requests."
                )
            pick = self._rng.uniform(0, 100)
            acc = 0.0
            chosen = next(iter(ep.config.routes))
            for entity_name, pct in ep.config.routes.items():
                acc += pct
                if pick < acc:
                    chosen = entity_name
                    break
            entity = ep.config.entities[chosen]
            entity.requests += 1
        try:
            out = unity_catalog.predict(entity, body)
        except ApiError:
            with self._lock:
                entity.errors += 1
            raise
        return 200, {"predictions": out}, {"served-model-name": entity.name}

    def _logs(self, name: str, entity: str) -> str:
        with self._lock:
            ep = self._require(name)
            for cfg in (ep.config, ep.pending):
                if cfg is not None and entity in cfg.entities:
                    return "\n".join(cfg.entities[entity].logs)
        raise ApiError(
            404, "RESOURCE_DOES_NOT_EXIST", f"Served entity '{entity}' does not exist in '{name}'."
        )

    def _metrics(self, name: str) -> str:
        with self._lock:
            ep = self._require(name)
            lines = [
                "# HELP request_count_total Requests answered by a served entity.",
                "# TYPE request_count_total counter",
            ]
            entities = ep.config.entities.values() if ep.config else []
            for e in entities:
                lines.append(f'request_count_total{{served_entity_name="{e.name}"}} {e.requests}')
            lines += ["# TYPE request_4xx_count_total counter"]
            for e in entities:
                lines.append(f'request_4xx_count_total{{served_entity_name="{e.name}"}} {e.errors}')
            return "\n".join(lines) + "\n"


def _make_handler(double: DatabricksDouble) -> type[BaseHTTPRequestHandler]:
    class Handler(JSONHandler):
        def _handle(self) -> None:
            status, payload, extra = double.handle(
                self.command, self.path, dict(self.headers.items()), self.read_body()
            )
            self.send_json(status, payload, extra)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    return Handler

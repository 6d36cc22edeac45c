"""An offline double of Hugging Face Inference Endpoints, for tests (ours and users').

:class:`HFEndpointsDouble` is a real HTTP server on 127.0.0.1 that implements the REST paths
``huggingface_hub`` calls for Inference Endpoints::

    GET    {base}/api/whoami-v2
    GET    {base}/v2/endpoint/{namespace}
    POST   {base}/v2/endpoint/{namespace}                      create
    GET    {base}/v2/endpoint/{namespace}/{name}
    PUT    {base}/v2/endpoint/{namespace}/{name}               update in place
    DELETE {base}/v2/endpoint/{namespace}/{name}
    POST   {base}/v2/endpoint/{namespace}/{name}/pause
    POST   {base}/v2/endpoint/{namespace}/{name}/resume
    POST   {base}/v2/endpoint/{namespace}/{name}/scale-to-zero

with the endpoint JSON that ``huggingface_hub.InferenceEndpoint`` parses, and the state machine
``pending -> initializing -> running`` (configurable delays), ``updating``, ``paused``,
``scaledToZero``, ``failed`` / ``updateFailed``. Like a real endpoint, each endpoint gets its own
serving URL (its own port on 127.0.0.1, stable across updates, pause and resume, gone after
delete) that answers the health route and predictions of a deterministic fake model whose
answers depend on the repository *and revision* (see :func:`fake_prediction`).

Failures are injected by repository name: a repository containing ``fail_marker`` ("fail")
fails to start (``failed``, or ``updateFailed`` for an update, with :attr:`failure_message`),
one containing ``never_ready_marker`` ("never-ready") stays ``initializing`` forever.

Point the real ``huggingface_hub`` client at it with :meth:`HFEndpointsDouble.patch_hub`::

    from zenml_model_deployers.testing.hf_double import HFEndpointsDouble

    with HFEndpointsDouble(namespace="me", token="hf_test") as double, double.patch_hub():
        run_my_pipeline()                      # deploys through huggingface_hub, offline
        assert double.endpoint("my-model").state == "running"

``patch_hub`` sets ``huggingface_hub.constants.INFERENCE_ENDPOINTS_ENDPOINT`` and
``ENDPOINT`` (what ``HF_ENDPOINT`` sets) and installs a ``huggingface_hub`` HTTP client that,
when ``HF_HUB_OFFLINE`` is on, still refuses every URL except the double's: offline tests keep
the guarantee that nothing leaves the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlparse

from zenml_model_deployers.testing.hf_endpoints import (
    HEALTH_ROUTE,
    Endpoint,
    EndpointRecord,
    Transition,
    fake_prediction,
)
from zenml_model_deployers.testing.local_server import JSONHandler, LocalServer, ServedDouble

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")


class HFEndpointsDouble(ServedDouble):
    """A local Inference Endpoints API + per-endpoint serving URLs (see the module docstring).

    Attributes:
        namespace: the namespace whoami reports (the token owner's).
        orgs: other namespaces the token may use.
        token: the token every call must present (None: any token, or none, is accepted).
        pending_delay: seconds in ``pending`` after create or resume.
        init_delay: seconds in ``initializing`` (also a scaled-to-zero endpoint's wake-up).
        update_delay: seconds in ``updating`` before the new revision serves.
        fail_marker: a repository containing it fails to start.
        never_ready_marker: a repository containing it never becomes ready.
        failure_message: the failed endpoint's message (``{repository}`` is filled in).
        update_failure_state: ``updateFailed`` (old revision keeps serving) or ``failed``.
        scale_to_zero_unit: seconds per "minute" of ``scaleToZeroTimeout`` for the automatic
            scale-to-zero of idle endpoints with ``minReplica == 0`` (None: never automatic).
    """

    def __init__(
        self,
        *,
        namespace: str = "zmd-test",
        orgs: tuple[str, ...] = (),
        token: str | None = None,
        pending_delay: float = 0.1,
        init_delay: float = 0.2,
        update_delay: float = 0.3,
        fail_marker: str = "fail",
        never_ready_marker: str = "never-ready",
        failure_message: str = (
            "Endpoint failed to start. OSError: {repository} does not appear to have a file "
            "named config.json (injected failure)"
        ),
        update_failure_state: str = "updateFailed",
        scale_to_zero_unit: float | None = None,
    ) -> None:
        """Configures the double (start it with ``with`` or :meth:`start`).

        Args:
            namespace: see the class attributes.
            orgs: see the class attributes.
            token: see the class attributes.
            pending_delay: see the class attributes.
            init_delay: see the class attributes.
            update_delay: see the class attributes.
            fail_marker: see the class attributes.
            never_ready_marker: see the class attributes.
            failure_message: see the class attributes.
            update_failure_state: see the class attributes.
            scale_to_zero_unit: see the class attributes.
        """
        if update_failure_state not in ("updateFailed", "failed"):
            raise ValueError("update_failure_state must be 'updateFailed' or 'failed'.")
        self.namespace = namespace
        self.orgs = orgs
        self.token = token
        self.pending_delay = pending_delay
        self.init_delay = init_delay
        self.update_delay = update_delay
        self.fail_marker = fail_marker
        self.never_ready_marker = never_ready_marker
        self.failure_message = failure_message
        self.update_failure_state = update_failure_state
        self.scale_to_zero_unit = scale_to_zero_unit
        self.calls: list[tuple[str, str]] = []
        self._endpoints: dict[tuple[str, str], Endpoint] = {}
        self._lock = threading.RLock()

    THREAD_NAME = "hf-double-api"

    # ----------------------------------------------------------------- lifecycle
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        return _make_api_handler(self)

    def close(self) -> None:
        """Stops every endpoint's serving server and the API server."""
        with self._lock:
            endpoints = list(self._endpoints.values())
            self._endpoints.clear()
        for ep in endpoints:
            _stop_serving(ep)
        super().close()

    @property
    def base_url(self) -> str:
        """What ``HF_ENDPOINT`` would be (``http://127.0.0.1:PORT``)."""
        return self.server_url

    @property
    def endpoints_url(self) -> str:
        """What ``huggingface_hub.constants.INFERENCE_ENDPOINTS_ENDPOINT`` must be."""
        return f"{self.base_url}/v2"

    @contextlib.contextmanager
    def patch_hub(self) -> Iterator[HFEndpointsDouble]:
        """Points ``huggingface_hub`` (this process) at the double, and back afterwards.

        Sets ``constants.INFERENCE_ENDPOINTS_ENDPOINT`` and ``constants.ENDPOINT`` (and the
        ``HF_ENDPOINT`` environment variable, for code that reads it later), and installs a
        ``huggingface_hub`` HTTP client that in offline mode (``HF_HUB_OFFLINE=1``) lets only
        requests to the double's API and endpoints through.

        Yields:
            The double.
        """
        from huggingface_hub import constants, set_client_factory
        from huggingface_hub.utils import _http

        saved = (constants.INFERENCE_ENDPOINTS_ENDPOINT, constants.ENDPOINT)
        saved_env = os.environ.get("HF_ENDPOINT")
        saved_factory = getattr(_http, "_GLOBAL_CLIENT_FACTORY", _http.default_client_factory)
        constants.INFERENCE_ENDPOINTS_ENDPOINT = self.endpoints_url
        constants.ENDPOINT = self.base_url
        os.environ["HF_ENDPOINT"] = self.base_url
        set_client_factory(self._client_factory)
        try:
            yield self
        finally:
            constants.INFERENCE_ENDPOINTS_ENDPOINT, constants.ENDPOINT = saved
            if saved_env is None:
                os.environ.pop("HF_ENDPOINT", None)
            else:
                os.environ["HF_ENDPOINT"] = saved_env
            set_client_factory(saved_factory)

    def _client_factory(self) -> Any:
        import httpx2
        from huggingface_hub import constants
        from huggingface_hub.errors import OfflineModeIsEnabled
        from huggingface_hub.utils._http import hf_request_event_hook

        def hook(request: Any) -> None:
            if not constants.is_offline_mode():
                hf_request_event_hook(request)
            elif not self.owns(str(request.url)):
                raise OfflineModeIsEnabled(
                    f"Cannot reach {request.url}: offline mode is enabled (HF_HUB_OFFLINE); "
                    "only the local Inference Endpoints double is reachable."
                )

        # trust_env=False: loopback traffic must never go through a proxy from the environment.
        return httpx2.Client(
            event_hooks={"request": [hook]}, follow_redirects=True, timeout=None, trust_env=False
        )

    def owns(self, url: str) -> bool:
        """Tells whether a URL is the double's API or one of its endpoints' URLs.

        Args:
            url: any URL.

        Returns:
            True for the double's own addresses.
        """
        u = urlparse(url)
        if u.hostname != "127.0.0.1":
            return False
        ports = {self._server.port} if self._server else set()
        with self._lock:
            ports |= {ep.server.port for ep in self._endpoints.values() if ep.server}
        return u.port in ports

    # ----------------------------------------------------------------- inspection for tests
    def endpoint(self, name: str, namespace: str | None = None) -> EndpointRecord | None:
        """A snapshot of an endpoint, or None if it does not exist.

        Args:
            name: the endpoint's name.
            namespace: its namespace (default: :attr:`namespace`).

        Returns:
            The record.
        """
        with self._lock:
            ep = self._get(namespace or self.namespace, name)
            if ep is None:
                return None
            return EndpointRecord(
                namespace=ep.namespace,
                name=ep.name,
                state=ep.state,
                message=ep.message,
                payload=json.loads(json.dumps(ep.payload)),
                secrets=dict(ep.secrets),
                serving=(ep.serving.repository, ep.serving.revision) if ep.serving else None,
                url=ep.server.url if ep.server and ep.ever_ran else None,
                requests=ep.requests,
                history=list(ep.history),
            )

    def names(self, namespace: str | None = None) -> list[str]:
        """The endpoints of a namespace.

        Args:
            namespace: default: :attr:`namespace`.

        Returns:
            Their names, sorted.
        """
        ns = namespace or self.namespace
        with self._lock:
            return sorted(n for (s, n) in self._endpoints if s == ns)

    def scale_to_zero(self, name: str, namespace: str | None = None) -> None:
        """Scales an endpoint to zero, as Hugging Face does after its idle timeout.

        Args:
            name: the endpoint.
            namespace: default: :attr:`namespace`.
        """
        with self._lock:
            ep = self._require(namespace or self.namespace, name)
            ep.scale_to_zero()

    def crash(self, name: str, message: str, namespace: str | None = None) -> None:
        """Puts a serving endpoint into ``failed`` (e.g. its container crashed).

        Args:
            name: the endpoint.
            message: Hugging Face's message.
            namespace: default: :attr:`namespace`.
        """
        with self._lock:
            ep = self._require(namespace or self.namespace, name)
            ep.transitions = []
            ep.serving = None
            ep.set_state("failed", message)

    # ----------------------------------------------------------------- internals
    def _get(self, namespace: str, name: str) -> Endpoint | None:
        ep = self._endpoints.get((namespace, name))
        if ep is not None:
            ep.advance(time.monotonic(), self.scale_to_zero_unit)
        return ep

    def _require(self, namespace: str, name: str) -> Endpoint:
        ep = self._get(namespace, name)
        if ep is None:
            raise KeyError(f"no endpoint {namespace}/{name}")
        return ep

    def _startup(self, ep: Endpoint, now: float, *, wake: bool = False) -> None:
        """Schedules pending -> initializing -> running (or failed) for a (re)start."""
        target = ep.target()
        t = now if wake else now + self.pending_delay
        ep.transitions = []
        if not wake:
            ep.set_state("pending", "Endpoint waiting to be scheduled")
            ep.transitions.append(Transition(t, "initializing", "Endpoint is initializing", None))
        else:
            ep.set_state("initializing", "Endpoint is waking up from scale-to-zero")
        if self.never_ready_marker in target.repository:
            return
        if self.fail_marker in target.repository:
            msg = self.failure_message.format(repository=target.repository)
            ep.transitions.append(Transition(t + self.init_delay, "failed", msg, None))
        else:
            ep.transitions.append(
                Transition(t + self.init_delay, "running", "Endpoint is running", target)
            )

    def _authorized(self, header: str | None) -> bool:
        if self.token is None:
            return True
        return header == f"Bearer {self.token}"

    def _may_use(self, namespace: str) -> bool:
        return namespace == self.namespace or namespace in self.orgs

    # ----------------------------------------------------------------- API operations
    def api(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        """Answers one API request (called by the HTTP handler).

        Args:
            method: HTTP method.
            path: URL path.
            body: parsed JSON body (or None).

        Returns:
            (HTTP status, JSON body).
        """
        self.calls.append((method, path))
        if path == "/api/whoami-v2" and method == "GET":
            return 200, {
                "type": "user",
                "id": "0" * 24,
                "name": self.namespace,
                "fullname": "zmd double",
                "orgs": [{"name": o, "type": "org"} for o in self.orgs],
                "auth": {"type": "access_token", "accessToken": {"role": "write"}},
            }
        parts = [p for p in path.split("/") if p]
        if len(parts) < 3 or parts[:2] != ["v2", "endpoint"]:
            return 404, {"error": f"Not found: {path}"}
        namespace, rest = parts[2], parts[3:]
        if not self._may_use(namespace):
            return 403, {"error": f"You don't have access to namespace '{namespace}'"}
        now = time.monotonic()
        with self._lock:
            if not rest:
                if method == "GET":
                    items = [
                        self._require(ns, n).raw()
                        for (ns, n) in sorted(self._endpoints)
                        if ns == namespace
                    ]
                    return 200, {"items": items}
                if method == "POST":
                    return self._create(namespace, body or {}, now)
                return 405, {"error": "Method not allowed"}
            name = rest[0]
            ep = self._get(namespace, name)
            if ep is None:
                return 404, {"error": f"Endpoint {name} not found"}
            action = rest[1] if len(rest) > 1 else None
            if action is None and method == "GET":
                return 200, ep.raw()
            if action is None and method == "PUT":
                return self._update(ep, body or {}, now)
            if action is None and method == "DELETE":
                del self._endpoints[(namespace, name)]
                ep.deleted = True
                gone = ep
            else:
                gone = None
        if gone is not None:
            # Outside the lock: its URL stops answering, as a deleted endpoint's host does.
            _stop_serving(gone)
            return 200, {}
        with self._lock:
            if method != "POST":
                return 405, {"error": "Method not allowed"}
            if action == "pause":
                ep.transitions = []
                ep.serving = None
                ep.set_state("paused", "Endpoint is paused")
                return 200, ep.raw()
            if action == "resume":
                if ep.state == "running":
                    return 400, {"error": "Endpoint is already running"}
                if ep.state not in ("pending", "initializing", "updating"):
                    self._startup(ep, now)
                return 200, ep.raw()
            if action == "scale-to-zero":
                if ep.state != "running":
                    return 400, {"error": f"Cannot scale to zero an endpoint in state {ep.state}"}
                ep.scale_to_zero()
                return 200, ep.raw()
            return 404, {"error": f"Not found: {path}"}

    def _create(self, namespace: str, body: dict[str, Any], now: float) -> tuple[int, Any]:
        name = body.get("name", "")
        if not isinstance(name, str) or not _NAME.match(name):
            return 400, {
                "error": f"Invalid endpoint name '{name}': use up to 32 lowercase letters, "
                "digits and '-', starting and ending with a letter or digit"
            }
        if (namespace, name) in self._endpoints:
            return 409, {"error": f"Endpoint name '{name}' already exists in '{namespace}'"}
        model = body.get("model") or {}
        if not model.get("repository") or not model.get("framework"):
            return 400, {"error": "model.repository and model.framework are required"}
        if body.get("type") not in ("public", "authenticated", "private"):
            return 400, {"error": f"Invalid endpoint type '{body.get('type')}'"}
        ep = Endpoint(namespace, name, json.loads(json.dumps(body)), self.namespace)
        ep.server = _start_serving(self, ep)
        self._endpoints[(namespace, name)] = ep
        self._startup(ep, now)
        return 200, ep.raw()

    def _update(self, ep: Endpoint, body: dict[str, Any], now: float) -> tuple[int, Any]:
        for section in ("compute", "model", "route"):
            patch = body.get(section)
            if not patch:
                continue
            patch = dict(patch)
            if section == "model" and "secrets" in patch:
                ep.secrets = dict(patch.pop("secrets") or {})
            current = ep.payload.setdefault(section, {})
            for k, v in patch.items():
                if isinstance(v, dict) and isinstance(current.get(k), dict) and k != "image":
                    current[k] = {**current[k], **v}
                else:
                    current[k] = v
        for key in ("tags", "cacheHttpResponses"):
            if key in body:
                ep.payload[key] = body[key]
        if ep.state == "paused":
            return 200, ep.raw()  # applied when it resumes
        target = ep.target()
        if ep.serving is None:
            # Nothing serves (failed, scaled to zero, starting): a (re)start with the new config.
            # After `updateFailed` the old replicas still serve: a rolling update, as usual.
            self._startup(ep, now)
            return 200, ep.raw()
        ep.transitions = []
        ep.set_state("updating", "Endpoint is updating")
        if self.never_ready_marker in target.repository:
            return 200, ep.raw()
        if self.fail_marker in target.repository:
            msg = self.failure_message.format(repository=target.repository)
            keep = ep.serving if self.update_failure_state == "updateFailed" else None
            ep.transitions.append(
                Transition(now + self.update_delay, self.update_failure_state, msg, keep)
            )
        else:
            ep.transitions.append(
                Transition(now + self.update_delay, "running", "Endpoint is running", target)
            )
        return 200, ep.raw()

    def serve(self, ep: Endpoint, method: str, path: str, auth: str | None, body: Any) -> Any:
        """Answers a request to an endpoint's URL (called by its HTTP handler).

        Args:
            ep: the endpoint.
            method: HTTP method.
            path: URL path.
            auth: the Authorization header.
            body: parsed JSON body.

        Returns:
            (HTTP status, JSON body).
        """
        with self._lock:
            if ep.deleted:
                return 404, {"error": "Endpoint not found"}
            ep.advance(time.monotonic(), self.scale_to_zero_unit)
            if ep.payload.get("type") != "public" and not self._authorized(auth):
                return 401, {"error": "Authorization header is invalid or missing"}
            if ep.state == "scaledToZero":
                # The request wakes it up; the caller retries after the cold start.
                self._startup(ep, time.monotonic(), wake=True)
                return 503, {"error": "Endpoint is scaled to zero and is waking up; retry"}
            if ep.serving is None:
                return 503, {"error": f"Endpoint is {ep.state}: {ep.message}"}
            model = ep.serving
            ep.last_activity = time.monotonic()
            if method in ("GET", "HEAD") and path.rstrip("/") == HEALTH_ROUTE:
                return 200, {}
            if method != "POST" or path.rstrip("/") != "":
                return 404, {"error": f"Not found: {method} {path}"}
            if not isinstance(body, dict) or "inputs" not in body:
                return 400, {"error": 'Body must be JSON with "inputs"'}
            if body.get("stream"):
                return 400, {"error": "streaming is not supported by this endpoint"}
            ep.requests += 1
        inputs = body["inputs"]
        if isinstance(inputs, list) and inputs and all(isinstance(x, str) for x in inputs):
            # A batch: one answer per input, each without the single-input wrapper list.
            answers = [
                fake_prediction(model.task, model.repository, model.revision, x) for x in inputs
            ]
            return 200, [a[0] if isinstance(a, list) else a for a in answers]
        return 200, fake_prediction(model.task, model.repository, model.revision, inputs)


# --------------------------------------------------------------------------- HTTP plumbing
def _json_body(handler: JSONHandler) -> Any:
    raw = handler.read_body()
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _request_id() -> dict[str, str]:
    return {"X-Request-Id": str(uuid.uuid4())}


def _make_api_handler(double: HFEndpointsDouble) -> type[BaseHTTPRequestHandler]:
    class Handler(JSONHandler):
        def _handle(self) -> None:
            body = _json_body(self)
            path = urlparse(self.path).path
            if not double._authorized(self.headers.get("Authorization")):
                self.send_json(
                    401, {"error": "Invalid credentials in Authorization header"}, _request_id()
                )
                return
            status, payload = double.api(self.command, path, body)
            self.send_json(status, payload, _request_id())

        do_GET = do_POST = do_PUT = do_DELETE = _handle

    return Handler


def _start_serving(double: HFEndpointsDouble, ep: Endpoint) -> LocalServer:
    class Handler(JSONHandler):
        def _handle(self) -> None:
            body = _json_body(self)
            status, payload = double.serve(
                ep, self.command, urlparse(self.path).path, self.headers.get("Authorization"), body
            )
            if ep.deleted:
                self.close_connection = True
            self.send_json(status, payload, _request_id())

        do_GET = do_POST = do_HEAD = _handle

    return LocalServer(Handler, f"hf-double-{ep.name}")


def _stop_serving(ep: Endpoint) -> None:
    ep.deleted = True
    if ep.server is not None:
        ep.server.close()


__all__ = ["EndpointRecord", "HFEndpointsDouble", "fake_prediction"]

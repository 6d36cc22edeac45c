"""An offline Kubernetes cluster for the cluster flavors' tests: an API server, a controller
and real model servers.

- The API server is ``kmock``'s in-memory Kubernetes emulator (PyPI), reached by the real
  ``kubernetes`` client through a kubeconfig this class writes. On top of it this module adds
  what the flavors rely on and kmock lacks: every custom object sent is validated against the
  CRD's ``openAPIV3Schema`` (a field a real API server would reject fails with 422),
  ``metadata.generation`` / ``uid`` / ``resourceVersion`` as a real server keeps them,
  RBAC refusals (403, injectable per verb and resource), and pod logs.
- A controller (a thread) reconciles Seldon Core 2 ``Model`` objects like Seldon's scheduler:
  it loads each model's ``storageUri`` into a real MLServer (the server Seldon Core 2 runs)
  under a per-generation name, switches the route only once the new version is loaded (the old
  one serves until then), and reports ``ModelReady``/``Ready`` conditions with
  ``observedGeneration``, or ``ModelReady=False`` with MLServer's own error.
- An ingress on ``base_url`` routes ``/v2/models/{name}/...`` by the ``Seldon-Model`` header to
  the model's current version, like Seldon's mesh.

Use it to test your own pipelines offline::

    from zenml_model_deployers.testing.kube_cluster import SimulatedCluster

    with SimulatedCluster() as cluster:
        # cluster.kubeconfig, cluster.namespace, cluster.base_url: give them to the
        # zmd-seldon model deployer (kubeconfig, kubernetes_namespace, base_url).
        ...

The CRDs it validates against ship with the package (``testing/crds/``, with each file's
provenance and license); ``crd_dir=`` points it at your own cluster's CRDs instead.

MLServer runs from its own environment (it pins FastAPI/Starlette below ZenML's): ``make test``
builds it under ``.venv/mlserver``; elsewhere set ``ZMD_MLSERVER`` to an ``mlserver`` executable.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import functools
import hashlib
import json
import logging
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

# The CRDs as Seldon Core and KServe publish them, shipped as package data (see crds/README.md).
BUNDLED_CRD_DIR = Path(__file__).resolve().parent / "crds"

SELDON_V2 = ("mlops.seldon.io", "v1alpha1")
# The controller's requests say who sent them, so tests can tell them from the flavor's.
CONTROLLER_AGENT = "zmd-simulated-controller"
SELDON_V1 = ("machinelearning.seldon.io", "v1")
# plural -> (group, version, kind, CRD file)
KINDS: dict[str, tuple[str, str, str, str]] = {
    "models": (*SELDON_V2, "Model", "mlops.seldon.io_models.yaml"),
    "experiments": (*SELDON_V2, "Experiment", "mlops.seldon.io_experiments.yaml"),
    "seldondeployments": (
        *SELDON_V1,
        "SeldonDeployment",
        "machinelearning.seldon.io_seldondeployments.yaml",
    ),
    "inferenceservices": (
        "serving.kserve.io",
        "v1beta1",
        "InferenceService",
        "serving.kserve.io_inferenceservices.yaml",
    ),
}


def find_mlserver() -> list[str]:
    """The command that runs MLServer: ``$ZMD_MLSERVER``, the one ``make test`` builds, or PATH.

    Returns:
        argv prefix, e.g. ``["/repo/.venv/mlserver/bin/mlserver"]``.

    Raises:
        FileNotFoundError: none found (says how to get one).
    """
    candidates = [
        os.environ.get("ZMD_MLSERVER", ""),
        str(Path(sys.prefix) / "mlserver" / "bin" / "mlserver"),
        shutil.which("mlserver") or "",
    ]
    for c in candidates:
        if c and Path(c).is_file():
            return [c]
    raise FileNotFoundError(
        "No MLServer found: run `make test` (it builds .venv/mlserver), or install "
        "`mlserver mlserver-sklearn` in an environment and set ZMD_MLSERVER to its `mlserver`."
    )


def free_port() -> int:
    """A free TCP port on 127.0.0.1.

    Returns:
        The port.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@functools.lru_cache(maxsize=4)
def load_crd_schemas(crd_dir: Path) -> dict[str, dict[str, Any]]:
    """The ``openAPIV3Schema`` of each known kind, from the CRD files.

    Args:
        crd_dir: the directory holding the CRD YAML files.

    Returns:
        plural -> schema (only the kinds whose file exists).
    """
    import yaml

    # The Core 1 CRD is 2.5 MB: libyaml reads it in 0.2 s, the pure-Python loader in seconds.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    out = {}
    for plural, (_, version, _, filename) in KINDS.items():
        path = crd_dir / filename
        if not path.is_file():
            continue
        crd = yaml.load(path.read_text(), Loader=loader)  # noqa: S506 - a safe loader
        for v in crd["spec"]["versions"]:
            if v["name"] == version:
                out[plural] = v["schema"]["openAPIV3Schema"]
    return out


def validate_manifest(plural: str, obj: dict[str, Any], schemas: dict[str, Any]) -> list[str]:
    """Validates an object against its CRD schema, as the API server does (structural schema:
    unknown fields, types, required fields, int-or-string).

    Args:
        plural: e.g. ``models``.
        obj: the object.
        schemas: from :func:`load_crd_schemas`.

    Returns:
        The errors, as ``path: message`` lines (empty: valid).
    """
    schema = schemas.get(plural)
    if schema is None:
        return []
    validator = _validator(schema)
    body = {k: v for k, v in obj.items() if k != "metadata"}
    errors = []
    for err in validator.iter_errors(body):
        path = ".".join(str(p) for p in err.absolute_path) or "(root)"
        errors.append(f"{path}: {err.message}")
    return sorted(errors)


# id(schema) -> (schema, validator): building one for KServe's 2 MB schema takes ~80 ms.
_VALIDATORS: dict[int, tuple[Any, Any]] = {}


def _validator(schema: dict[str, Any]) -> Any:
    """The strict validator of a schema, built once per schema object."""
    import jsonschema

    cached = _VALIDATORS.get(id(schema))
    if cached is None or cached[0] is not schema:
        cached = (schema, jsonschema.Draft7Validator(_structural(schema)))
        _VALIDATORS[id(schema)] = cached
    return cached[1]


def _structural(schema: Any) -> Any:
    """A structural schema as JSON Schema: unknown fields are errors (the API server prunes or,
    with field validation, rejects them: both lose what the flavor meant to send)."""
    if isinstance(schema, list):
        return [_structural(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _structural(v) for k, v in schema.items() if not k.startswith("x-kubernetes")}
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return out
    if out.get("type") == "object" and "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


@dataclass
class LoadedModel:
    """A Model the controller serves: its internal MLServer name per generation."""

    name: str
    namespace: str
    generation: int
    internal: str
    spec_digest: str


@dataclass
class ClusterLog:
    """What the API server received (for tests' assertions).

    Attributes:
        requests: verb, plural, name, namespace, subresource, params, body, by_controller.
        rejected: manifests refused by the CRD schema (plural, errors).
    """

    requests: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)


class SimulatedCluster:
    """An API server (kmock), a Seldon-like controller and an ingress with real MLServer.

    Attributes:
        namespace: the namespace that exists (others do not, unless added).
        kubeconfig: path of a kubeconfig whose current context is this cluster.
        context: that context's name.
        base_url: the ingress (Seldon mesh) URL.
        log: every request to the API server with its body, and the rejected ones.
    """

    def __init__(
        self,
        crd_dir: str | Path | None = None,
        namespace: str = "zmd-test",
        install: tuple[str, ...] = (
            "models",
            "experiments",
            "seldondeployments",
            "inferenceservices",
        ),
        load_delay: float = 0.3,
        poll_interval: float = 0.1,
        model_server: bool = True,
        workdir: str | Path | None = None,
        kserve_mode: str = "Serverless",
    ) -> None:
        """Prepares the cluster (``start`` or ``with`` runs it).

        Args:
            crd_dir: where the CRD YAML files are (their schemas validate every manifest);
                by default the CRDs shipped with the package (:data:`BUNDLED_CRD_DIR`). A
                folder of your cluster's own CRDs uses their files' names (see
                ``testing/crds/README.md``).
            namespace: the namespace that exists.
            install: the custom resource kinds installed (their API groups answer discovery).
            load_delay: seconds a model load takes at least (scheduling, pulling).
            poll_interval: seconds between the controller's reconcile passes.
            model_server: run MLServer, the ingress and the controller (False: the API
                server alone, for tests of the Kubernetes layer).
            workdir: where the kubeconfig, MLServer's repository and log go (a new temporary
                directory by default; removed by ``close``).
            kserve_mode: KServe's default deployment mode here (``Serverless`` or
                ``Standard``); an InferenceService's annotation overrides it.
        """
        from zenml_model_deployers.testing.kserve_sim import KServeController

        self.crd_dir = BUNDLED_CRD_DIR if crd_dir is None else Path(crd_dir)
        # A copy: `without_crd_field` changes this cluster's schemas only.
        self.schemas = dict(load_crd_schemas(self.crd_dir))
        missing = [p for p in install if p not in self.schemas]
        if missing:
            names = ", ".join(KINDS[p][3] for p in missing if p in KINDS)
            raise FileNotFoundError(
                f"CRDs for {missing} not found in {self.crd_dir} (expected {names}); leave "
                "crd_dir unset to use the CRDs shipped with zenml-model-deployers"
            )
        self.namespace = namespace
        self.install = install
        self.load_delay = load_delay
        self.poll_interval = poll_interval
        self.model_server = model_server
        self.log = ClusterLog()
        self.context = "zmd-simulated"
        self.forbidden: set[tuple[str, str]] = set()
        self.failures: dict[str, str] = {}
        self.secrets_seen: dict[str, dict[str, str]] = {}
        if workdir is not None:
            Path(workdir).mkdir(parents=True, exist_ok=True)
        self._root = Path(tempfile.mkdtemp(prefix="zmd-kube-", dir=workdir))
        self.kubeconfig = str(self._root / "kubeconfig")
        self._repo = self._root / "mlserver-repo"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop_event: asyncio.Event | None = None
        self._ready = threading.Event()
        self._emulator: Any = None
        self.api_url = ""
        self._mlserver: subprocess.Popen[bytes] | None = None
        self._mlserver_port = 0
        self._metrics_port = 0
        # Core 2 Model name -> the last version loaded (the agent names it <model>_<version>)
        self._versions: dict[str, int] = {}
        self._mlserver_log = self._root / "mlserver.log"
        self._controller: threading.Thread | None = None
        self._halt = threading.Event()
        self._ingress: ThreadingHTTPServer | None = None
        self.base_url = ""
        # (namespace, name) -> what serves it now
        self.routes: dict[tuple[str, str], LoadedModel] = {}
        # (namespace, default model) -> [(candidate model, weight)] of ready Experiments
        self.splits: dict[tuple[str, str], list[tuple[str, int]]] = {}
        # Core 1: (namespace, SeldonDeployment) -> (protocol, [(traffic, predictor's model)])
        self.sdep_routes: dict[tuple[str, str], tuple[str, list[tuple[int, LoadedModel]]]] = {}
        self._routes_lock = threading.Lock()
        self._errors: list[str] = []
        self.kserve = KServeController(self, kserve_mode)
        # Seconds a replaced model keeps answering requests already routed to it (a pod's
        # termination grace period); without it an in-flight request meets a 404.
        self.drain_seconds = 1.0
        self._timers: list[threading.Timer] = []

    # ----------------------------------------------------------------- injection
    def forbid(self, verb: str, plural: str) -> None:
        """Makes the API server refuse a verb on a resource with 403, as RBAC does.

        Args:
            verb: ``create``, ``patch``, ``get``, ``list``, ``delete``.
            plural: e.g. ``models``.
        """
        self.forbidden.add((verb, plural))

    def without_crd_field(self, plural: str, path: str) -> None:
        """Removes a field from a kind's schema, as an older CRD lacks it (e.g.
        ``spec.canary`` of InferenceServices before KServe 0.20).

        Args:
            plural: e.g. ``inferenceservices``.
            path: dotted path of the field, e.g. ``spec.canary``.
        """
        schema = copy.deepcopy(self.schemas[plural])
        node = schema
        *parents, leaf = path.split(".")
        for part in parents:
            node = node["properties"][part]
        node["properties"].pop(leaf, None)
        self.schemas[plural] = schema

    def restore_crd(self, plural: str) -> None:
        """Puts a kind's schema back as its CRD file has it (undoes ``without_crd_field``).

        Args:
            plural: e.g. ``inferenceservices``.
        """
        self.schemas[plural] = load_crd_schemas(self.crd_dir)[plural]

    def allow_all(self) -> None:
        """Lifts every injected refusal."""
        self.forbidden.clear()

    def fail_model(self, storage_uri_part: str, message: str) -> None:
        """Makes every load of a storage URI containing a string fail with a message.

        Args:
            storage_uri_part: a substring of the storage URI.
            message: what the server reports.
        """
        self.failures[storage_uri_part] = message

    # ----------------------------------------------------------------- lifecycle
    def __enter__(self) -> SimulatedCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Starts the API server, MLServer, the ingress and the controller."""
        self._start_api_server()
        self._write_kubeconfig()
        if not self.model_server:
            return
        self._start_mlserver()
        self._start_ingress()
        self._controller = threading.Thread(
            target=self._reconcile_forever, name="zmd-sim-controller", daemon=True
        )
        self._controller.start()

    def close(self) -> None:
        """Stops everything this cluster started (MLServer by its pid) and removes its files."""
        self._halt.set()
        if self._controller is not None:
            self._controller.join(timeout=10)
        self.kserve.close()
        for timer in self._timers:
            if timer.is_alive():
                # Due now: a drained server process must not outlive the cluster.
                timer.cancel()
                with contextlib.suppress(Exception):
                    timer.function(*timer.args)
        if self._ingress is not None:
            self._ingress.shutdown()
            self._ingress.server_close()
        if self._mlserver is not None:
            import psutil

            from zenml_model_deployers.local.process import terminate_all

            with contextlib.suppress(psutil.Error):
                terminate_all([psutil.Process(self._mlserver.pid)], 10)
            with contextlib.suppress(Exception):
                self._mlserver.wait(timeout=5)
        if self._loop is not None and self._stop_event is not None:
            self._loop.call_soon_threadsafe(self._stop_event.set)
        if self._thread is not None:
            self._thread.join(timeout=10)
        shutil.rmtree(self._root, ignore_errors=True)

    # ----------------------------------------------------------------- API server
    def _start_api_server(self) -> None:
        self._thread = threading.Thread(target=self._serve_api, name="zmd-kmock", daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError(f"the Kubernetes emulator did not start: {self._errors}")

    def _serve_api(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._api_main())
        except Exception as e:  # noqa: BLE001 - reported by start()
            self._errors.append(repr(e))
            self._ready.set()
        finally:
            loop.close()

    async def _api_main(self) -> None:
        import kmock

        # One access-log line per API call drowns what the user runs.
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
        emulator = _make_emulator(self)
        self._stop_event = asyncio.Event()
        async with emulator, kmock.Server(emulator) as server:
            self._emulator = emulator
            for plural in self.install:
                group, version, kind, _ = KINDS[plural]
                emulator.resources[f"{group}/{version}/{plural}"] = kmock.ResourceInfo(
                    kind=kind,
                    namespaced=True,
                    verbs={"get", "list", "watch", "create", "patch", "delete"},
                    subresources={"status"},
                )
            for core in ("namespaces", "secrets", "pods", "serviceaccounts"):
                emulator.resources[f"v1/{core}"] = kmock.ResourceInfo(
                    kind=core[:-1].capitalize(), namespaced=core != "namespaces"
                )
            self.add_namespace(self.namespace)
            if self.model_server:
                # The pod of Seldon's default MLServer Server (its log is MLServer's).
                emulator.objects[kmock.resource("v1/pods"), self.namespace, SERVER_POD] = {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": SERVER_POD,
                        "namespace": self.namespace,
                        "labels": {"seldon-server-name": "mlserver"},
                    },
                    "status": {"phase": "Running"},
                }
            self.api_url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stop_event.wait()

    def add_namespace(self, name: str) -> None:
        """Creates a namespace object (call from the API server's thread or before start).

        Args:
            name: the namespace.
        """
        import kmock

        self._emulator.objects[kmock.resource("v1/namespaces"), None, name] = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "uid": str(uuid.uuid4())},
            "status": {"phase": "Active"},
        }

    def objects(self, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """The live objects of a resource, as the API server holds them.

        Args:
            plural: e.g. ``models`` or ``secrets``.
            namespace: default: the cluster's namespace.

        Returns:
            Deep copies.
        """
        ns = namespace or self.namespace
        out = []
        for (res, obj_ns, _), obj in list(self._emulator.objects.items()):
            if res.plural == plural and obj_ns == ns and not obj.deleted:
                out.append(copy.deepcopy(dict(obj.raw)))
        return out

    def _write_kubeconfig(self) -> None:
        import yaml

        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": self.context, "cluster": {"server": self.api_url}}],
            "users": [{"name": "zmd-test", "user": {"token": "zmd-simulated-token"}}],
            "contexts": [
                {
                    "name": self.context,
                    "context": {
                        "cluster": self.context,
                        "user": "zmd-test",
                        "namespace": self.namespace,
                    },
                }
            ],
            "current-context": self.context,
        }
        Path(self.kubeconfig).write_text(yaml.safe_dump(cfg))

    def api(self) -> Any:
        """A ``kubernetes.client.ApiClient`` on this cluster (what the controller uses).

        Returns:
            The client.
        """
        from kubernetes import config

        return config.new_client_from_config(config_file=self.kubeconfig, context=self.context)

    # ----------------------------------------------------------------- MLServer
    def _start_mlserver(self) -> None:
        self._repo.mkdir(parents=True)
        self._mlserver_port = free_port()
        self._metrics_port = free_port()
        (self._repo / "settings.json").write_text(
            json.dumps(
                {
                    "load_models_at_startup": False,
                    "http_port": self._mlserver_port,
                    "grpc_port": free_port(),
                    "metrics_port": self._metrics_port,
                    "parallel_workers": 0,
                    "host": "127.0.0.1",
                }
            )
        )
        with open(self._mlserver_log, "wb") as log:
            self._mlserver = subprocess.Popen(  # noqa: S603 - our own argv
                [*find_mlserver(), "start", str(self._repo)],
                cwd=str(self._root),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        import requests

        deadline = time.monotonic() + 90
        url = f"http://127.0.0.1:{self._mlserver_port}/v2/health/live"
        while time.monotonic() < deadline:
            if self._mlserver.poll() is not None:
                raise RuntimeError(f"MLServer exited: {self.mlserver_log_tail()}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(url, timeout=1).status_code == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"MLServer did not start in 90 s: {self.mlserver_log_tail()}")

    @property
    def metrics_url(self) -> str:
        """MLServer's Prometheus endpoint (its metrics port), what a Prometheus scrapes."""
        return f"http://127.0.0.1:{self._metrics_port}/metrics"

    def mlserver_log_tail(self, lines: int = 40) -> str:
        """The last lines of MLServer's log.

        Args:
            lines: how many.

        Returns:
            Text.
        """
        try:
            return "\n".join(self._mlserver_log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _mls(self, method: str, path: str, **kw: Any) -> Any:
        import requests

        return requests.request(
            method, f"http://127.0.0.1:{self._mlserver_port}{path}", timeout=60, **kw
        )

    # ----------------------------------------------------------------- ingress
    def _start_ingress(self) -> None:
        cluster = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, code: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _route(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                host = (self.headers.get("Host") or "").rsplit(":", 1)[0]
                answer = cluster.kserve.route(self.command, host, self.path, body)
                if answer is None:
                    answer = cluster.route(
                        self.command, self.path, self.headers.get("Seldon-Model", ""), body
                    )
                self._answer(*answer)

            def do_GET(self) -> None:  # noqa: N802 - http.server's API
                self._route()

            def do_POST(self) -> None:  # noqa: N802 - http.server's API
                self._route()

        self._ingress = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self._ingress.daemon_threads = True
        threading.Thread(target=self._ingress.serve_forever, daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self._ingress.server_address[1]}"

    def route(self, method: str, path: str, header: str, body: bytes) -> tuple[int, bytes]:
        """Serves one ingress request: picks the model by the ``Seldon-Model`` header.

        Args:
            method: HTTP method.
            path: the path, e.g. ``/v2/models/iris/infer``.
            header: the ``Seldon-Model`` header.
            body: the request body.

        Returns:
            (status, body).
        """
        if path.startswith("/seldon/"):
            return self.route_core1(method, path, body)
        if path in ("/v2/health/ready", "/v2/health/live"):
            return 200, b""
        if not header:
            return 404, b'{"error": "no Seldon-Model header: the mesh cannot route"}'
        name = header.split(".")[0]
        with self._routes_lock:
            target = name
            split = self.splits.get((self.namespace, name))
            if split:
                # An Experiment whose default is this model: pick a candidate by weight.
                pick = random.uniform(0, sum(w for _, w in split))
                for candidate, weight in split:
                    target = candidate
                    pick -= weight
                    if pick < 0:
                        break
            loaded = self.routes.get((self.namespace, target))
        if loaded is None:
            return 404, json.dumps({"error": f"model {name} not found"}).encode()
        prefix = f"/v2/models/{name}"
        if not path.startswith(prefix):
            return 404, json.dumps({"error": f"path {path} is not under {prefix}"}).encode()
        rest = path[len(prefix) :]
        import requests

        try:
            r = self._mls(
                method,
                f"/v2/models/{loaded.internal}{rest}",
                data=body or None,
                headers={"Content-Type": "application/json"} if body else {},
            )
        except requests.RequestException as e:
            return 503, json.dumps({"error": f"upstream: {e}"}).encode()
        content = r.content
        if r.status_code == 200 and content:
            with contextlib.suppress(ValueError):
                data = r.json()
                if isinstance(data, dict) and data.get("model_name") == loaded.internal:
                    data["model_name"] = loaded.name
                    content = json.dumps(data).encode()
        return r.status_code, content

    # ----------------------------------------------------------------- controller
    def _reconcile_forever(self) -> None:
        from kubernetes import client

        api = self.api()
        api.user_agent = CONTROLLER_AGENT
        custom = client.CustomObjectsApi(api)
        core = client.CoreV1Api(api)
        while not self._halt.is_set():
            try:
                self._reconcile_models(custom, core)
                self._reconcile_experiments(custom)
                self._reconcile_seldon_deployments(custom, core)
                self.kserve.reconcile(custom, core)
            except Exception as e:  # noqa: BLE001 - the controller keeps running, like a real one
                self._errors.append(f"{type(e).__name__}: {e}")
            self._halt.wait(self.poll_interval)

    def _reconcile_models(self, custom: Any, core: Any) -> None:
        items = self._installed_items(custom, "models")
        present = set()
        for model in items:
            meta = model.get("metadata") or {}
            name = meta["name"]
            present.add((self.namespace, name))
            generation = int(meta.get("generation") or 1)
            observed = int((model.get("status") or {}).get("observedGeneration") or 0)
            if observed >= generation:
                continue
            self._load(custom, core, model, name, generation)
        with self._routes_lock:
            gone = [k for k in self.routes if k not in present]
        for key in gone:
            with self._routes_lock:
                loaded = self.routes.pop(key)
            self._unload(loaded.internal)

    def _installed_items(self, custom: Any, plural: str) -> list[dict[str, Any]]:
        """The objects of a kind in the namespace ([] when the kind is not installed)."""
        if plural not in self.install:
            return []
        group, version, _, _ = KINDS[plural]
        items: list[dict[str, Any]] = custom.list_namespaced_custom_object(
            group, version, self.namespace, plural
        ).get("items", [])
        return items

    def _reconcile_experiments(self, custom: Any) -> None:
        """Experiments route their default model's requests to their candidates by weight,
        once every candidate is loaded (Ready), like Seldon's pipeline gateway."""
        items = self._installed_items(custom, "experiments")
        group, version = SELDON_V2
        present = set()
        for exp in items:
            meta = exp.get("metadata") or {}
            spec = exp.get("spec") or {}
            default = spec.get("default") or meta["name"]
            key = (self.namespace, default)
            present.add(key)
            candidates = [
                (c["name"], int(c.get("weight") or 0)) for c in spec.get("candidates") or []
            ]
            with self._routes_lock:
                missing = [c for c, _ in candidates if (self.namespace, c) not in self.routes]
                if not missing:
                    self.splits[key] = candidates
                else:
                    self.splits.pop(key, None)
            ready = not missing
            gen = int(meta.get("generation") or 1)
            status = exp.get("status") or {}
            conds = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
            flag = "True" if ready else "False"
            if int(status.get("observedGeneration") or 0) == gen and conds.get("Ready") == flag:
                continue
            now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            message = "" if ready else f"candidates not ready: {', '.join(missing)}"
            conditions = [
                {
                    "type": t,
                    "status": flag,
                    "reason": "" if ready else "CandidatesNotReady",
                    "message": message,
                    "lastTransitionTime": now,
                }
                for t in ("Ready", "CandidatesReady")
            ]
            with contextlib.suppress(Exception):
                custom.patch_namespaced_custom_object_status(
                    group,
                    version,
                    self.namespace,
                    "experiments",
                    meta["name"],
                    {"status": {"conditions": conditions, "observedGeneration": gen}},
                )
        with self._routes_lock:
            for key in [k for k in self.splits if k not in present]:
                self.splits.pop(key)

    def _reconcile_seldon_deployments(self, custom: Any, core: Any) -> None:
        """Core 1: each predictor with replicas is loaded into MLServer (the prepackaged
        SKLEARN_SERVER); the old predictors serve until every new one is loaded; replicas 0
        unloads; a load failure is ``state: Failed`` with the server's error."""
        items = self._installed_items(custom, "seldondeployments")
        present = set()
        for sd in items:
            meta = sd.get("metadata") or {}
            present.add((self.namespace, meta["name"]))
            gen = int(meta.get("generation") or 1)
            if int((sd.get("status") or {}).get("observedGeneration") or 0) >= gen:
                continue
            self._load_sdep(custom, core, sd, meta["name"], gen)
        with self._routes_lock:
            gone = [k for k in self.sdep_routes if k not in present]
            dropped = [self.sdep_routes.pop(k) for k in gone]
        for _, preds in dropped:
            for _, loaded in preds:
                self._unload(loaded.internal)

    def _load_sdep(self, custom: Any, core: Any, sd: dict[str, Any], name: str, gen: int) -> None:
        group, version = SELDON_V1
        spec = sd.get("spec") or {}
        protocol = str(spec.get("protocol") or "seldon")
        key = (self.namespace, name)
        self._set_sdep_status(custom, name, gen - 1, "Creating", "rolling out", 0)
        with self._routes_lock:
            old = list(self.sdep_routes.get(key, ("", []))[1])
        reusable = {m.spec_digest: m for _, m in old}
        new: list[tuple[int, LoadedModel]] = []
        fresh: list[LoadedModel] = []
        error = ""
        predictors = spec.get("predictors") or []
        for pred in predictors:
            if int(pred.get("replicas", 1)) == 0:
                continue
            graph = pred.get("graph") or {}
            traffic = int(pred.get("traffic") or (100 if len(predictors) == 1 else 0))
            if pred.get("componentSpecs") or graph.get("implementation") != "SKLEARN_SERVER":
                what = graph.get("implementation") or "a custom image"
                error = f"{what} is not available in the simulated cluster (SKLEARN_SERVER is)"
                break
            digest = hashlib.sha256(json.dumps(graph, sort_keys=True).encode()).hexdigest()[:12]
            if digest in reusable:
                new.append((traffic, reusable[digest]))
                continue
            model_spec = {
                "storageUri": graph.get("modelUri") or "",
                "secretName": graph.get("envSecretRefName"),
                "parameters": graph.get("parameters") or [],
            }
            error = self._check_secret(core, name, model_spec)
            if error:
                break
            internal = f"sd-{name}-{pred['name']}-g{gen}-{digest[:6]}"
            time.sleep(self.load_delay)
            error = self._load_into_mlserver(internal, model_spec)
            if error:
                break
            loaded = LoadedModel(name, self.namespace, gen, internal, digest)
            fresh.append(loaded)
            new.append((traffic, loaded))
        latest = None
        with contextlib.suppress(Exception):
            latest = custom.get_namespaced_custom_object(
                group, version, self.namespace, "seldondeployments", name
            )
        moved = latest is None or int((latest.get("metadata") or {}).get("generation") or 1) != gen
        if error or moved:
            for loaded in fresh:
                self._unload(loaded.internal)
            if error and not moved:
                self._set_sdep_status(custom, name, gen, "Failed", error, 0)
            return
        with self._routes_lock:
            self.sdep_routes[key] = (protocol, new)
        kept = {m.internal for _, m in new}
        for _, loaded in old:
            if loaded.internal not in kept:
                self.retire(loaded.internal)
        self._set_sdep_status(custom, name, gen, "Available", "", len(new))

    def _set_sdep_status(
        self, custom: Any, name: str, gen: int, state: str, description: str, replicas: int
    ) -> None:
        group, version = SELDON_V1
        with contextlib.suppress(Exception):
            custom.patch_namespaced_custom_object_status(
                group,
                version,
                self.namespace,
                "seldondeployments",
                name,
                {
                    "status": {
                        "state": state,
                        "description": description,
                        "observedGeneration": gen,
                        "replicas": replicas,
                    }
                },
            )

    def route_core1(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        """Serves ``/seldon/{ns}/{name}/...`` like Seldon Core 1's ingress and executor.

        Args:
            method: HTTP method.
            path: the path.
            body: the request body.

        Returns:
            (status, body).
        """
        parts = path.split("/", 4)  # '', 'seldon', ns, name, rest
        if len(parts) < 5:
            return 404, b'{"error": "not a /seldon/{namespace}/{name}/... path"}'
        ns, name, rest = parts[2], parts[3], "/" + parts[4]
        with self._routes_lock:
            entry = self.sdep_routes.get((ns, name))
        if entry is None or not entry[1]:
            return 503, b"no healthy upstream"
        protocol, preds = entry
        if rest in ("/api/v1.0/health/status", "/api/v1.0/health/ping", "/v2/health/ready"):
            return 200, b'{"status": "ok"}'
        pick = random.uniform(0, sum(t for t, _ in preds) or 1)
        loaded = preds[-1][1]
        for traffic, candidate in preds:
            pick -= traffic
            if pick < 0:
                loaded = candidate
                break
        if rest == "/api/v1.0/predictions" and protocol == "seldon":
            return self._seldon_predict(loaded, body)
        prefix = "/v2/models/classifier"
        if protocol == "v2" and rest.startswith(prefix):
            r = self._mls(
                method,
                f"/v2/models/{loaded.internal}{rest[len(prefix) :]}",
                data=body or None,
                headers={"Content-Type": "application/json"} if body else {},
            )
            return r.status_code, r.content
        return 404, json.dumps({"error": f"{rest} is not served by protocol {protocol}"}).encode()

    def _seldon_predict(self, loaded: LoadedModel, body: bytes) -> tuple[int, bytes]:
        """The Seldon protocol over MLServer's V2: ndarray in, ndarray out."""
        import numpy as np

        try:
            rows = np.asarray(json.loads(body)["data"]["ndarray"], dtype=np.float64)
        except (ValueError, KeyError, TypeError) as e:
            return 400, json.dumps({"status": {"code": -1, "info": f"bad request: {e}"}}).encode()
        if rows.ndim == 1:
            rows = rows.reshape(1, -1)
        v2 = {
            "inputs": [
                {
                    "name": "predict",
                    "shape": list(rows.shape),
                    "datatype": "FP64",
                    "data": rows.reshape(-1).tolist(),
                }
            ]
        }
        r = self._mls("POST", f"/v2/models/{loaded.internal}/infer", json=v2)
        if r.status_code != 200:
            return r.status_code, r.content
        out = r.json()["outputs"][0]
        values = np.asarray(out["data"]).reshape(out["shape"]).tolist()
        answer = {"data": {"names": ["t:0"], "ndarray": values}, "meta": {}}
        return 200, json.dumps(answer).encode()

    def _load(self, custom: Any, core: Any, model: dict[str, Any], name: str, gen: int) -> None:
        group, version = SELDON_V2
        spec = model.get("spec") or {}
        digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
        with self._routes_lock:
            current = self.routes.get((self.namespace, name))
        if current is not None and current.spec_digest == digest:
            # The spec came back to what serves (a rollback): nothing to load.
            self._set_model_status(custom, name, gen, True, "ModelAvailable", "", spec)
            return
        self._set_model_status(
            custom, name, gen, False, "ModelProgressing", "loading the model", spec
        )
        error = self._check_secret(core, name, spec)
        # Seldon Core 2's agent loads version N of Model `name` into the server as `name_N`
        # (what MLServer's metrics call the model).
        loaded_version = self._versions.get(name, 0) + 1
        self._versions[name] = loaded_version
        internal = f"{name}_{loaded_version}"
        if not error:
            time.sleep(self.load_delay)
            error = self._load_into_mlserver(internal, spec)
        # The spec may have moved on while loading: report only for what was loaded.
        latest = self._read_model(custom, name)
        if latest is None:
            if not error:
                self._unload(internal)
            return
        if int((latest.get("metadata") or {}).get("generation") or 1) != gen:
            if not error:
                self._unload(internal)
            return
        if error:
            self._set_model_status(custom, name, gen, False, "ModelFailed", error, spec)
            return
        with self._routes_lock:
            old = self.routes.get((self.namespace, name))
            self.routes[(self.namespace, name)] = LoadedModel(
                name, self.namespace, gen, internal, digest
            )
        if old is not None:
            self.retire(old.internal)
        self._set_model_status(custom, name, gen, True, "ModelAvailable", "", spec)

    def _read_model(self, custom: Any, name: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        group, version = SELDON_V2
        try:
            obj: dict[str, Any] = custom.get_namespaced_custom_object(
                group, version, self.namespace, "models", name
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return obj

    def _check_secret(self, core: Any, name: str, spec: dict[str, Any]) -> str:
        from kubernetes.client.exceptions import ApiException

        secret_name = spec.get("secretName")
        if not secret_name:
            return ""
        try:
            secret = core.read_namespaced_secret(secret_name, self.namespace)
        except ApiException as e:
            if e.status == 404:
                return f"secret {secret_name} not found in namespace {self.namespace}"
            raise
        raw = core.api_client.sanitize_for_serialization(secret) if secret is not None else {}
        if not raw:
            # kmock answers typed reads with the raw object; read it from the store instead.
            found = [s for s in self.objects("secrets") if s["metadata"]["name"] == secret_name]
            raw = found[0] if found else {}
        data = raw.get("data") or {}
        self.secrets_seen[name] = {k: base64.b64decode(v).decode() for k, v in data.items()}
        return ""

    def _load_into_mlserver(self, internal: str, spec: dict[str, Any]) -> str:
        uri = str(spec.get("storageUri") or "")
        for part, message in self.failures.items():
            if part in uri:
                return message
        path = Path(urlparse(uri).path) if uri.startswith("file://") else Path(uri)
        if not path.is_absolute():
            return (
                f"failed to download model from {uri}: only local paths and file:// URIs "
                "exist in the simulated cluster"
            )
        reqs = set(spec.get("requirements") or [])
        implementation = "mlserver_sklearn.SKLearnModel"
        if "mlflow" in reqs:
            implementation = "mlserver_mlflow.MLflowRuntime"
        uri_in = path / "model.joblib" if path.is_dir() else path
        params = {p["name"]: p["value"] for p in spec.get("parameters") or []}
        settings = {
            "name": internal,
            "implementation": implementation,
            "parameters": {"uri": str(uri_in), "version": internal, "extra": params},
        }
        d = self._repo / internal
        d.mkdir(parents=True, exist_ok=True)
        (d / "model-settings.json").write_text(json.dumps(settings))
        r = self._mls("POST", f"/v2/repository/models/{internal}/load")
        if r.status_code == 200:
            return ""
        shutil.rmtree(d, ignore_errors=True)
        try:
            return str(r.json().get("error") or r.text)
        except ValueError:
            return r.text or f"MLServer answered {r.status_code}"

    def retire(self, internal: str) -> None:
        """Unloads a model no longer routed to once the requests in flight to it drained.

        Args:
            internal: its MLServer name.
        """
        self.later(self._unload, internal)

    def later(self, action: Any, *args: Any) -> None:
        """Runs ``action(*args)`` after ``drain_seconds`` (cancelled by ``close``).

        Args:
            action: what to run.
            *args: its arguments.
        """
        timer = threading.Timer(self.drain_seconds, action, args=args)
        timer.daemon = True
        self._timers = [t for t in self._timers if t.is_alive()] + [timer]
        timer.start()

    def _unload(self, internal: str) -> None:
        with contextlib.suppress(Exception):
            self._mls("POST", f"/v2/repository/models/{internal}/unload")
        shutil.rmtree(self._repo / internal, ignore_errors=True)

    def _set_model_status(
        self,
        custom: Any,
        name: str,
        gen: int,
        ready: bool,
        reason: str,
        message: str,
        spec: dict[str, Any],
    ) -> None:
        from kubernetes.client.exceptions import ApiException

        group, version = SELDON_V2
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        flag = "True" if ready else "False"
        conditions = [
            {
                "type": t,
                "status": flag,
                "reason": reason,
                "message": message,
                "lastTransitionTime": now,
            }
            for t in ("ModelReady", "Ready")
        ]
        replicas = int(spec.get("replicas") or 1)
        status = {
            "status": {
                "conditions": conditions,
                "observedGeneration": gen if reason != "ModelProgressing" else gen - 1,
                "replicas": replicas,
                "availableReplicas": replicas if ready else 0,
                "modelgwReady": "True" if ready else "False",
            }
        }
        with contextlib.suppress(ApiException):
            custom.patch_namespaced_custom_object_status(
                group, version, self.namespace, "models", name, status
            )

    def controller_errors(self) -> list[str]:
        """Errors the controller met (a test can assert there were none).

        Returns:
            Messages.
        """
        return list(self._errors)


_NAMESPACE_PATH = re.compile(r"^/api/v1/namespaces/([^/]+)/?$")
_POD_LOG_PATH = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)/log$")
SERVER_POD = "mlserver-0"


def _make_emulator(cluster: SimulatedCluster) -> Any:
    """kmock's emulator plus schema validation, generations, RBAC refusals and pod logs."""
    import kmock
    from kmock._internal import enums

    verbs = {
        enums.action.CREATE: "create",
        enums.action.UPDATE: "patch",
        enums.action.DELETE: "delete",
        enums.action.FETCH: "get",
        enums.action.LIST: "list",
        enums.action.WATCH: "watch",
    }

    class Emulator(kmock.KubernetesEmulator):
        async def _handle(self, request: Any) -> Any:
            logs = _POD_LOG_PATH.match(request.url.path)
            if logs and cluster.model_server:
                # The model server pod's log is MLServer's own.
                import aiohttp.web

                if ("get", "pods/log") in cluster.forbidden:
                    return aiohttp.web.json_response(
                        {
                            "kind": "Status",
                            "code": 403,
                            "reason": "Forbidden",
                            "message": f'pods "{logs.group(2)}" is forbidden: User '
                            '"system:serviceaccount:zmd:deployer" cannot get resource "pods/log"',
                        },
                        status=403,
                    )
                text = cluster.mlserver_log_tail(int(request.params.get("tailLines") or 10000))
                return aiohttp.web.Response(text=text + "\n", content_type="text/plain")
            match = _NAMESPACE_PATH.match(request.url.path)
            if match and str(request.method.value).upper() == "GET":
                # kmock reads /api/v1/namespaces/<name> as a listing inside that namespace.
                import aiohttp.web

                key = (kmock.resource("v1/namespaces"), None, match.group(1))
                if key in self.objects and not self.objects[key].deleted:
                    return aiohttp.web.json_response(dict(self.objects[key].raw))
                return aiohttp.web.json_response(
                    {
                        "apiVersion": "v1",
                        "kind": "Status",
                        "status": "Failure",
                        "code": 404,
                        "reason": "NotFound",
                        "message": f'namespaces "{match.group(1)}" not found',
                    },
                    status=404,
                )
            if request.action == enums.action.LIST and str(
                request.params.get("watch", "")
            ).lower() in ("true", "1"):
                # The kubernetes client sends watch=True; kmock only knows watch=true (the
                # API server parses both). Requests are frozen: set the parsed action in place.
                object.__setattr__(request, "action", enums.action.WATCH)
            if request.resource is not None:
                plural = request.resource.plural
                verb = verbs.get(request.action, str(request.action))
                cluster.log.requests.append(
                    {
                        "verb": verb,
                        "plural": plural,
                        "name": request.name,
                        "namespace": request.namespace,
                        "subresource": request.subresource,
                        "params": dict(request.params),
                        "body": copy.deepcopy(request.data),
                        "by_controller": request.headers.get("User-Agent") == CONTROLLER_AGENT,
                    }
                )
                if (verb, plural) in cluster.forbidden:
                    group = request.resource.group or '""'
                    raise kmock.KubernetesError(
                        status=403,
                        reason="Forbidden",
                        message=(
                            f'{plural}.{request.resource.group} "{request.name or ""}" is '
                            f'forbidden: User "system:serviceaccount:zmd:deployer" cannot '
                            f'{verb} resource "{plural}" in API group {group} in the '
                            f'namespace "{request.namespace}"'
                        ),
                        details={},
                    )
                if request.namespace and plural != "namespaces":
                    ns_key = (kmock.resource("v1/namespaces"), None, request.namespace)
                    if ns_key not in self.objects or self.objects[ns_key].deleted:
                        raise kmock.KubernetesError(
                            status=404,
                            reason="NotFound",
                            message=f'namespaces "{request.namespace}" not found',
                            details={},
                        )
                if (
                    request.action == enums.action.UPDATE
                    and str(request.params.get("dryRun", "")) == "All"
                    and isinstance(request.data, dict)
                ):
                    return self._dry_run_patch(plural, request)
                if request.action == enums.action.CREATE and isinstance(request.data, dict):
                    self._on_create(plural, request)
                elif (
                    request.action == enums.action.UPDATE
                    and isinstance(request.data, dict)
                    and request.subresource is None
                ):
                    self._on_patch(plural, request)
            return await super()._handle(request)

        def _on_create(self, plural: str, request: Any) -> None:
            errors = validate_manifest(plural, request.data, cluster.schemas)
            if errors:
                self._reject(plural, request, errors)
            meta = request.data.setdefault("metadata", {})
            meta.setdefault("namespace", request.namespace)
            meta["uid"] = str(uuid.uuid4())
            meta["generation"] = 1
            meta["resourceVersion"] = str(time.monotonic_ns())
            meta["creationTimestamp"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

        def _on_patch(self, plural: str, request: Any) -> None:
            from kmock._internal import dicts

            key = (request.resource, request.namespace, request.name)
            if key not in self.objects or self.objects[key].deleted:
                return
            current = copy.deepcopy(dict(self.objects[key].raw))
            merged = dicts.patch_dict(copy.deepcopy(current), request.data)
            errors = validate_manifest(plural, dict(merged), cluster.schemas)
            if errors:
                self._reject(plural, request, errors)
            meta = request.data.setdefault("metadata", {}) or {}
            request.data["metadata"] = meta
            if merged.get("spec") != current.get("spec"):
                meta["generation"] = int(current["metadata"].get("generation") or 1) + 1
            meta["resourceVersion"] = str(time.monotonic_ns())

        def _dry_run_patch(self, plural: str, request: Any) -> Any:
            """``dryRun=All``: validated and answered as if applied, never stored (kmock
            would store it)."""
            import aiohttp.web
            from kmock._internal import dicts

            key = (request.resource, request.namespace, request.name)
            if key not in self.objects or self.objects[key].deleted:
                raise kmock.KubernetesError(
                    status=404, reason="NotFound", message=f'"{request.name}" not found', details={}
                )
            current = copy.deepcopy(dict(self.objects[key].raw))
            merged = dicts.patch_dict(copy.deepcopy(current), request.data)
            errors = validate_manifest(plural, dict(merged), cluster.schemas)
            if errors:
                self._reject(plural, request, errors)
            return aiohttp.web.json_response(dict(merged))

        def _reject(self, plural: str, request: Any, errors: list[str]) -> None:
            cluster.log.rejected.append({"plural": plural, "errors": errors})
            kind = KINDS[plural][2] if plural in KINDS else plural
            name = (request.data.get("metadata") or {}).get("name") or request.name
            raise kmock.KubernetesError(
                status=422,
                reason="Invalid",
                message=f'{kind}.{request.resource.group} "{name}" is invalid: '
                + "; ".join(errors),
                details={},
            )

    return Emulator()

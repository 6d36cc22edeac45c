"""The simulated cluster put together: the API server, MLServer, the Seldon-like and
KServe-like controllers (one thread reconciling both) and the ingress in front of Seldon's
mesh and KServe's gateway."""

from __future__ import annotations

import copy
import shutil
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from zenml_model_deployers.testing.kube_cluster.apiserver import (
    CONTROLLER_AGENT,
    ApiServer,
    ClusterLog,
)
from zenml_model_deployers.testing.kube_cluster.crds import (
    BUNDLED_CRD_DIR,
    KINDS,
    load_crd_schemas,
)
from zenml_model_deployers.testing.kube_cluster.kserve import KServeController
from zenml_model_deployers.testing.kube_cluster.kserve_gateway import KServeGateway
from zenml_model_deployers.testing.kube_cluster.mlserver import MLServerHost, free_port
from zenml_model_deployers.testing.kube_cluster.seldon import SeldonController


class SimulatedCluster:
    """An API server (kmock), Seldon-like and KServe-like controllers and an ingress with real
    MLServer.

    Attributes:
        namespace: the namespace that exists (others do not, unless added).
        kubeconfig: path of a kubeconfig whose current context is this cluster.
        context: that context's name.
        base_url: the ingress (Seldon mesh, KServe gateway) URL.
        log: every request to the API server with its body, and the rejected ones.
        schemas: plural -> the schema the API server validates that kind against.
        secrets_seen: model -> the storage credentials its server read.
        seldon: the Seldon-like controller (and mesh).
        kserve: the KServe-like controller (``kserve.queue_proxy``: its Serverless metrics).
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

        Raises:
            FileNotFoundError: ``crd_dir`` lacks the CRD of an installed kind.
        """
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
        self.secrets_seen: dict[str, dict[str, str]] = {}
        if workdir is not None:
            Path(workdir).mkdir(parents=True, exist_ok=True)
        self._root = Path(tempfile.mkdtemp(prefix="zmd-kube-", dir=workdir))
        self.kubeconfig = str(self._root / "kubeconfig")
        self.mlserver = MLServerHost(self._root)
        self.apiserver = ApiServer(
            namespace,
            install,
            self.schemas,
            self.log,
            self.forbidden,
            self.mlserver.log_tail if model_server else None,
            crd_dir=self.crd_dir,
        )
        parts = (namespace, install, load_delay, self.mlserver, self.objects, self.secrets_seen)
        self.seldon = SeldonController(*parts)
        self.gateway = KServeGateway(namespace, self.mlserver)
        self.kserve = KServeController(
            *parts, gateway=self.gateway, root=self._root, default_mode=kserve_mode
        )
        self._controller: threading.Thread | None = None
        self._halt = threading.Event()
        self._errors: list[str] = []
        self._ingress: ThreadingHTTPServer | None = None
        self.base_url = ""

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
        self.mlserver.failures[storage_uri_part] = message

    # ----------------------------------------------------------------- lifecycle
    def __enter__(self) -> SimulatedCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Starts the API server, MLServer, the ingress and the controllers."""
        self.apiserver.start()
        self.apiserver.write_kubeconfig(self.kubeconfig, self.context)
        if not self.model_server:
            return
        self.mlserver.start()
        self._start_ingress()
        self._controller = threading.Thread(
            target=self._reconcile_forever, name="zmd-sim-controller", daemon=True
        )
        self._controller.start()

    def close(self) -> None:
        """Stops everything this cluster started (server processes by their pids) and removes
        its files."""
        self._halt.set()
        if self._controller is not None:
            self._controller.join(timeout=10)
        self.kserve.close()
        if self._ingress is not None:
            self._ingress.shutdown()
            self._ingress.server_close()
        self.mlserver.close()
        self.apiserver.close()
        shutil.rmtree(self._root, ignore_errors=True)

    # ----------------------------------------------------------------- API server
    @property
    def api_url(self) -> str:
        """The API server's URL."""
        return self.apiserver.url

    def add_namespace(self, name: str) -> None:
        """Creates a namespace object (call from the API server's thread or before start).

        Args:
            name: the namespace.
        """
        self.apiserver.add_namespace(name)

    def objects(self, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """The live objects of a resource (deep copies; by default in the cluster's namespace).

        Args:
            plural: e.g. ``models`` or ``secrets``.
            namespace: another namespace.

        Returns:
            The objects.
        """
        return self.apiserver.objects(plural, namespace)

    def api(self) -> Any:
        """A ``kubernetes.client.ApiClient`` on this cluster (what the controllers use).

        Returns:
            The client.
        """
        from kubernetes import config

        return config.new_client_from_config(config_file=self.kubeconfig, context=self.context)

    # ----------------------------------------------------------------- MLServer
    @property
    def metrics_url(self) -> str:
        """MLServer's Prometheus endpoint (its metrics port), what a Prometheus scrapes."""
        return self.mlserver.metrics_url

    def mlserver_log_tail(self, lines: int = 40) -> str:
        """The last lines of MLServer's log.

        Args:
            lines: how many.

        Returns:
            Text.
        """
        return self.mlserver.log_tail(lines)

    @property
    def drain_seconds(self) -> float:
        """Seconds a replaced model keeps answering requests already routed to it (a pod's
        termination grace period); without it an in-flight request meets a 404."""
        return self.mlserver.drain_seconds

    @drain_seconds.setter
    def drain_seconds(self, seconds: float) -> None:
        self.mlserver.drain_seconds = seconds

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
                answer = cluster.gateway.route(self.command, host, self.path, body)
                if answer is None:
                    answer = cluster.seldon.route(
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

    # ----------------------------------------------------------------- controllers
    def _reconcile_forever(self) -> None:
        from kubernetes import client

        api = self.api()
        api.user_agent = CONTROLLER_AGENT
        custom = client.CustomObjectsApi(api)
        core = client.CoreV1Api(api)
        while not self._halt.is_set():
            try:
                self.seldon.reconcile(custom, core)
                self.kserve.reconcile(custom, core)
            except Exception as e:  # noqa: BLE001 - the controller keeps running, like a real one
                self._errors.append(f"{type(e).__name__}: {e}")
            self._halt.wait(self.poll_interval)

    def controller_errors(self) -> list[str]:
        """Errors the controllers met (a test can assert there were none).

        Returns:
            Messages.
        """
        return list(self._errors)

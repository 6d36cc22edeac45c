"""The KServe part of the simulated cluster: a controller that reconciles ``InferenceService``s
like KServe's, and the gateway that routes their hosts to real model servers.

What it models (and the flavor relies on):

- ``metadata.generation`` (kept by the simulated API server) and ``status.observedGeneration``
  per reconcile; ``Ready``/``PredictorReady`` conditions; ``status.url``
  (``http://{name}.{namespace}.example.com``, KServe's default domain template);
  ``status.deploymentMode`` (the ``serving.kserve.io/deploymentMode`` annotation, else the
  cluster's default).
- Serverless: every change of the predictor creates a revision (``{name}-predictor-0000N``);
  the route moves to it only once it is ready (the old revision serves until then); with
  ``canaryTrafficPercent`` the new revision gets that share and the previous rolled-out
  revision (``latestRolledoutRevision``, tag ``prev``) the rest; without it the latest ready
  revision takes 100 % and becomes the rolled-out one. ``status.components.predictor`` says so
  (``traffic``, ``latestCreatedRevision``, ``latestReadyRevision``, ``latestRolledoutRevision``,
  ``previousRolledoutRevision``).
- Standard (RawDeployment): ``canaryTrafficPercent`` is ignored (kserve#5335: the new spec takes
  all traffic once ready); ``spec.canary`` entries (KServe >= 0.20) each get their share,
  reported in ``status.canaryStatuses``.
- ``serving.kserve.io/stop: "true"``: the workloads go away (the model is unloaded), the
  ``Stopped`` condition is True and ``Ready`` False; removing it brings the model back.
- A model that fails to load: ``Ready=False`` (``RevisionFailed`` in Serverless,
  ``ModelLoadFailed`` in Standard) with the model server's own error, and
  ``modelStatus.lastFailureInfo``; the previous revision keeps the traffic.

Predictions: sklearn/mlflow models load into the cluster's real MLServer. MLServer speaks V2
only, so V1 requests (``{"instances": ...}``) are translated by the gateway to V2 and the
answer back to ``{"predictions": ...}`` (KServe's own sklearn server, which speaks V1, is the
`kserve` package we never install). ``huggingface`` models run the vLLM stand-in (a real small
LLM on CPU) behind the Hugging Face server's ``/openai/v1/...`` routes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zenml_model_deployers.testing.kube_cluster import LoadedModel, SimulatedCluster

KSERVE = ("serving.kserve.io", "v1beta1")
DOMAIN = "example.com"
STOP_ANNOTATION = "serving.kserve.io/stop"
MODE_ANNOTATION = "serving.kserve.io/deploymentMode"


@dataclass
class LLMServer:
    """A vLLM stand-in process serving one Hugging Face revision."""

    proc: subprocess.Popen[bytes]
    port: int
    served_name: str


@dataclass
class Revision:
    """A revision of an InferenceService's predictor (Serverless) or a Standard workload."""

    name: str
    digest: str
    backend: LoadedModel | LLMServer | None = None
    error: str = ""


@dataclass
class IsvcState:
    """What the controller keeps about one InferenceService."""

    uid: str
    counter: int = 0
    revisions: list[Revision] = field(default_factory=list)
    latest_rolled_out: str = ""
    previous_rolled_out: str = ""
    # Serverless: (revision name, percent, tag)
    traffic: list[tuple[str, int, str]] = field(default_factory=list)
    # Standard: the main workload and the canaries with their share.
    main: Revision | None = None
    canaries: list[tuple[Revision, int]] = field(default_factory=list)
    seen: tuple[int, bool] = (0, False)


@dataclass
class Route:
    """Where a host's requests go: (backend, percent) pairs and the model's name; in
    Serverless mode, the Knative revision of each backend (what its queue-proxy counts)."""

    name: str
    backends: list[tuple[LoadedModel | LLMServer, int]]
    revisions: list[str] = field(default_factory=list)


# Knative's default buckets of `revision_request_latencies` (milliseconds), abridged.
QUEUE_PROXY_BUCKETS_MS = (5, 10, 20, 40, 60, 80, 100, 150, 200, 300, 500, 1000, 2000, 5000, 10000)


class QueueProxyMetrics:
    """What Knative's queue-proxy sidecars export per revision (Serverless mode), served
    on one ``/metrics`` port: ``revision_request_count`` (a counter, exposed without the
    ``_total`` suffix as Knative's exporter does) and the ``revision_request_latencies``
    histogram in milliseconds, labelled ``namespace_name``, ``configuration_name``,
    ``service_name``, ``revision_name``, ``response_code``, ``response_code_class``.
    Standard mode has no queue-proxy: nothing is counted there."""

    def __init__(self) -> None:
        """Starts with no series; the port opens on first :meth:`url`."""
        self._lock = threading.Lock()
        # labels -> [count, sum_ms, per-bucket counts (cumulative at collect)]
        self._series: dict[tuple[tuple[str, str], ...], list[Any]] = {}
        self._server: Any = None

    def observe(self, namespace: str, isvc: str, revision: str, code: int, ms: float) -> None:
        """Counts one request a revision answered.

        Args:
            namespace: the namespace.
            isvc: the InferenceService's name.
            revision: the Knative revision.
            code: the HTTP status.
            ms: its latency in milliseconds.
        """
        component = f"{isvc}-predictor"
        labels = (
            ("configuration_name", component),
            ("namespace_name", namespace),
            ("response_code", str(code)),
            ("response_code_class", f"{code // 100}xx"),
            ("revision_name", revision),
            ("service_name", component),
        )
        with self._lock:
            entry = self._series.setdefault(labels, [0, 0.0, [0] * len(QUEUE_PROXY_BUCKETS_MS)])
            entry[0] += 1
            entry[1] += ms
            for i, bound in enumerate(QUEUE_PROXY_BUCKETS_MS):
                if ms <= bound:
                    entry[2][i] += 1
                    break

    def collect(self) -> Any:
        """prometheus_client's collector protocol: the families as they stand now.

        Yields:
            The counter (untyped, to keep Knative's name) and the histogram.
        """
        from prometheus_client.core import HistogramMetricFamily, UnknownMetricFamily

        names = ["configuration_name", "namespace_name", "response_code"]
        names += ["response_code_class", "revision_name", "service_name"]
        count = UnknownMetricFamily(
            "revision_request_count", "The number of requests routed to queue-proxy", labels=names
        )
        hist = HistogramMetricFamily(
            "revision_request_latencies", "The response time in millisecond", labels=names
        )
        with self._lock:
            items = [(k, v[0], v[1], list(v[2])) for k, v in self._series.items()]
        for labels, n, total_ms, per_bucket in items:
            values = [v for _, v in labels]
            count.add_metric(values, n)
            cumulative, buckets = 0, []
            for bound, c in zip(QUEUE_PROXY_BUCKETS_MS, per_bucket, strict=True):
                cumulative += c
                buckets.append((str(float(bound)), cumulative))
            buckets.append(("+Inf", n))
            hist.add_metric(values, buckets, total_ms)
        yield count
        yield hist

    def url(self) -> str:
        """The ``/metrics`` URL a Prometheus scrapes (opened on first call).

        Returns:
            ``http://127.0.0.1:<port>/metrics``.
        """
        if self._server is None:
            from prometheus_client import CollectorRegistry, start_http_server

            from zenml_model_deployers.testing.kube_cluster import free_port

            registry = CollectorRegistry(auto_describe=False)
            registry.register(self)
            port = free_port()
            self._server, _ = start_http_server(port, addr="127.0.0.1", registry=registry)
        return f"http://127.0.0.1:{self._server.server_address[1]}/metrics"

    def close(self) -> None:
        """Closes the port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class KServeController:
    """Reconciles InferenceServices; its ``routes`` feed the gateway."""

    def __init__(self, cluster: SimulatedCluster, default_mode: str = "Serverless") -> None:
        """Binds to a cluster (its MLServer, API server and load settings).

        Args:
            cluster: the simulated cluster.
            default_mode: the cluster's default deployment mode (KServe's
                ``inferenceservice-config``): ``Serverless`` or ``Standard``.
        """
        self.cluster = cluster
        self.default_mode = default_mode
        self.states: dict[str, IsvcState] = {}
        self.routes: dict[str, Route] = {}
        self.lock = threading.Lock()
        self.queue_proxy = QueueProxyMetrics()

    # ----------------------------------------------------------------- reconcile
    def reconcile(self, custom: Any, core: Any) -> None:
        """One pass over the namespace's InferenceServices.

        Args:
            custom: ``CustomObjectsApi`` (as the controller).
            core: ``CoreV1Api``.
        """
        items = self.cluster._installed_items(custom, "inferenceservices")
        present = set()
        for isvc in items:
            meta = isvc.get("metadata") or {}
            name = meta["name"]
            present.add(name)
            state = self.states.get(name)
            if state is None or state.uid != meta.get("uid"):
                if state is not None:
                    self._drop(name)
                state = self.states[name] = IsvcState(uid=str(meta.get("uid")))
            gen = int(meta.get("generation") or 1)
            stop = (meta.get("annotations") or {}).get(STOP_ANNOTATION) == "true"
            if state.seen == (gen, stop):
                continue
            self._reconcile_one(custom, core, isvc, state, gen, stop)
        for name in [n for n in self.states if n not in present]:
            self._drop(name)

    def _drop(self, name: str) -> None:
        state = self.states.pop(name)
        with self.lock:
            self.routes.pop(self.host(name), None)
        for rev in [*state.revisions, *([state.main] if state.main else [])] + [
            r for r, _ in state.canaries
        ]:
            self._release(rev)

    def host(self, name: str) -> str:
        """The InferenceService's host (KServe's default domain template).

        Args:
            name: the InferenceService.

        Returns:
            ``{name}.{namespace}.example.com``.
        """
        return f"{name}.{self.cluster.namespace}.{DOMAIN}"

    def _reconcile_one(
        self,
        custom: Any,
        core: Any,
        isvc: dict[str, Any],
        state: IsvcState,
        gen: int,
        stop: bool,
    ) -> None:
        meta = isvc["metadata"]
        name = meta["name"]
        spec = isvc.get("spec") or {}
        mode = (meta.get("annotations") or {}).get(MODE_ANNOTATION) or self.default_mode
        base = {"url": f"http://{self.host(name)}", "deploymentMode": mode}
        if stop:
            with self.lock:
                self.routes.pop(self.host(name), None)
            for rev in state.revisions:
                self._release(rev)
            state.traffic = []
            if state.main is not None:
                self._release(state.main)
            for rev, _ in state.canaries:
                self._release(rev)
            state.main, state.canaries = None, []
            state.revisions = [r for r in state.revisions if r.backend is not None]
            self._set_status(
                custom,
                name,
                {
                    **base,
                    "observedGeneration": gen,
                    "conditions": _conds(
                        ("Ready", "False", "Stopped", "The InferenceService is stopped"),
                        ("PredictorReady", "False", "Stopped", "The predictor is stopped"),
                        ("Stopped", "True", "", ""),
                    ),
                },
            )
            state.seen = (gen, stop)
            return
        if state.seen[1]:
            # Coming back from a stop: every workload starts again.
            state.revisions, state.traffic, state.main, state.canaries = [], [], None, []
            state.latest_rolled_out = state.previous_rolled_out = ""
        pred = spec.get("predictor") or {}
        self._set_status(
            custom,
            name,
            {
                **base,
                "observedGeneration": gen,
                "conditions": _conds(
                    ("Ready", "Unknown", "Deploying", "the predictor is rolling out"),
                    ("PredictorReady", "Unknown", "Deploying", "the predictor is rolling out"),
                    ("Stopped", "False", "", ""),
                ),
                "modelStatus": {
                    "transitionStatus": "InProgress",
                    "states": {"activeModelState": "Loading", "targetModelState": "Loaded"},
                    "lastFailureInfo": None,
                },
            },
            merge_components=True,
        )
        if mode == "Serverless":
            status = self._serverless(core, name, pred, state)
        else:
            status = self._standard(core, name, spec, pred, state)
        if self._moved(custom, name, gen, stop):
            return  # the spec changed meanwhile: the next pass reconciles it
        self._set_status(custom, name, {**base, "observedGeneration": gen, **status})
        state.seen = (gen, stop)

    def _moved(self, custom: Any, name: str, gen: int, stop: bool) -> bool:
        from kubernetes.client.exceptions import ApiException

        group, version = KSERVE
        try:
            latest = custom.get_namespaced_custom_object(
                group, version, self.cluster.namespace, "inferenceservices", name
            )
        except ApiException:
            return True
        meta = latest.get("metadata") or {}
        now_stop = (meta.get("annotations") or {}).get(STOP_ANNOTATION) == "true"
        return int(meta.get("generation") or 1) != gen or now_stop != stop

    # ----------------------------------------------------------------- Serverless
    def _serverless(
        self, core: Any, name: str, pred: dict[str, Any], state: IsvcState
    ) -> dict[str, Any]:
        template = {k: v for k, v in pred.items() if k != "canaryTrafficPercent"}
        digest = _digest(template)
        latest = state.revisions[-1] if state.revisions else None
        if latest is None or latest.digest != digest:
            state.counter += 1
            latest = Revision(f"{name}-predictor-{state.counter:05d}", digest)
            state.revisions.append(latest)
            self._load(core, name, latest, pred)
        ready_revs = [r for r in state.revisions if r.backend is not None]
        latest_ready = ready_revs[-1].name if ready_revs else ""
        if latest.error:
            conditions = _conds(
                (
                    "Ready",
                    "False",
                    "RevisionFailed",
                    f'Revision "{latest.name}" failed with message: {latest.error}.',
                ),
                (
                    "PredictorReady",
                    "False",
                    "RevisionFailed",
                    f'Revision "{latest.name}" failed with message: {latest.error}.',
                ),
                ("Stopped", "False", "", ""),
            )
            return {
                "conditions": conditions,
                "components": {
                    "predictor": self._component(name, state, latest.name, latest_ready)
                },
                "modelStatus": _model_status(False, latest.error, latest.name),
            }
        ctp = pred.get("canaryTrafficPercent")
        if ctp is not None and state.latest_rolled_out and state.latest_rolled_out != latest.name:
            state.traffic = [
                (latest.name, int(ctp), "latest"),
                (state.latest_rolled_out, 100 - int(ctp), "prev"),
            ]
        else:
            state.traffic = [(latest.name, 100, "latest")]
            if state.latest_rolled_out != latest.name:
                state.previous_rolled_out = state.latest_rolled_out
                state.latest_rolled_out = latest.name
        serving = {r for r, _, _ in state.traffic}
        by_name = {r.name: r for r in state.revisions}
        routed = [
            (r, by_name[r].backend, pct)
            for r, pct, _ in state.traffic
            if by_name.get(r) is not None and by_name[r].backend is not None
        ]
        backends = [(b, pct) for _, b, pct in routed]
        with self.lock:
            self.routes[self.host(name)] = Route(
                name,
                backends,  # type: ignore[arg-type]
                [r for r, _, _ in routed],
            )
        for rev in state.revisions:
            if rev.name not in serving:
                self._release(rev, drain=True)
        state.revisions = [r for r in state.revisions if r.name in serving or r is latest]
        return {
            "conditions": _conds(
                ("Ready", "True", "", ""),
                ("PredictorReady", "True", "", ""),
                ("IngressReady", "True", "", ""),
                ("Stopped", "False", "", ""),
            ),
            "components": {"predictor": self._component(name, state, latest.name, latest_ready)},
            "modelStatus": _model_status(True, "", latest.name),
        }

    def _component(
        self, name: str, state: IsvcState, latest_created: str, latest_ready: str
    ) -> dict[str, Any]:
        out: dict[str, Any] = {
            "url": f"http://{name}-predictor.{self.cluster.namespace}.{DOMAIN}",
            "latestCreatedRevision": latest_created,
            "latestReadyRevision": latest_ready,
            "traffic": [
                {
                    "revisionName": r,
                    "percent": pct,
                    "tag": tag,
                    "latestRevision": False,
                    "configurationName": f"{name}-predictor",
                }
                for r, pct, tag in state.traffic
            ],
        }
        if state.latest_rolled_out:
            out["latestRolledoutRevision"] = state.latest_rolled_out
        if state.previous_rolled_out:
            out["previousRolledoutRevision"] = state.previous_rolled_out
        return out

    # ----------------------------------------------------------------- Standard
    def _standard(
        self,
        core: Any,
        name: str,
        spec: dict[str, Any],
        pred: dict[str, Any],
        state: IsvcState,
    ) -> dict[str, Any]:
        # canaryTrafficPercent does nothing in this mode (kserve#5335).
        template = {k: v for k, v in pred.items() if k != "canaryTrafficPercent"}
        loaded = {r.digest: r for r in [state.main, *(c for c, _ in state.canaries)] if r}
        main = self._standard_workload(core, name, template, loaded, "predictor")
        canaries: list[tuple[Revision, int]] = []
        for i, entry in enumerate(spec.get("canary") or []):
            c_pred = entry.get("predictor") or {}
            rev = self._standard_workload(core, name, c_pred, loaded, f"canary-{i}")
            canaries.append((rev, int(entry.get("trafficPercent") or 0)))
        failed = [r for r in [main, *(c for c, _ in canaries)] if r.error]
        if failed:
            keep = {id(r) for r in [state.main, *(c for c, _ in state.canaries)] if r}
            for r in [main, *(c for c, _ in canaries)]:
                if id(r) not in keep:
                    self._release(r)
            msg = failed[0].error
            return {
                "conditions": _conds(
                    ("Ready", "False", "ModelLoadFailed", msg),
                    ("PredictorReady", "False", "ModelLoadFailed", msg),
                    ("Stopped", "False", "", ""),
                ),
                "modelStatus": _model_status(False, msg, failed[0].name),
                "canaryStatuses": self._canary_statuses(name, state.canaries),
            }
        old = [r for r in [state.main, *(c for c, _ in state.canaries)] if r]
        state.main, state.canaries = main, canaries
        rest = 100 - sum(p for _, p in canaries)
        backends = [(main.backend, rest)] + [(c.backend, p) for c, p in canaries]
        with self.lock:
            self.routes[self.host(name)] = Route(name, backends)  # type: ignore[arg-type]
        kept = {id(main), *(id(c) for c, _ in canaries)}
        for r in old:
            if id(r) not in kept:
                self._release(r, drain=True)
        out: dict[str, Any] = {
            "conditions": _conds(
                ("Ready", "True", "", ""),
                ("PredictorReady", "True", "", ""),
                ("Stopped", "False", "", ""),
            ),
            "components": {
                "predictor": {"url": f"http://{name}-predictor.{self.cluster.namespace}.svc"}
            },
            "modelStatus": _model_status(True, "", main.name),
        }
        if canaries:
            out["canaryStatuses"] = self._canary_statuses(name, canaries)
        else:
            out["canaryStatuses"] = None
        return out

    def _standard_workload(
        self,
        core: Any,
        name: str,
        pred: dict[str, Any],
        loaded: dict[str, Revision],
        role: str,
    ) -> Revision:
        digest = _digest(pred)
        if digest in loaded and loaded[digest].backend is not None:
            return loaded[digest]
        rev = Revision(f"{name}-{role}-{digest[:6]}", digest)
        self._load(core, name, rev, pred)
        return rev

    @staticmethod
    def _canary_statuses(name: str, canaries: list[tuple[Revision, int]]) -> list[dict[str, Any]]:
        return [
            {
                "name": f"{name}-canary-{i}",
                "ready": rev.backend is not None and not rev.error,
                "trafficPercent": pct,
            }
            for i, (rev, pct) in enumerate(canaries)
        ]

    # ----------------------------------------------------------------- model servers
    def _load(self, core: Any, name: str, rev: Revision, pred: dict[str, Any]) -> None:
        """Loads a revision's model: sklearn/mlflow into MLServer, huggingface into the vLLM
        stand-in; a failure is kept as the revision's error (the server's own words)."""
        model = pred.get("model") or {}
        fmt = str((model.get("modelFormat") or {}).get("name") or "")
        sa = pred.get("serviceAccountName")
        if sa:
            error = self._check_service_account(core, name, str(sa))
            if error:
                rev.error = error
                return
        time.sleep(self.cluster.load_delay)
        if fmt == "huggingface":
            self._start_llm(rev, model)
            return
        if fmt not in ("sklearn", "mlflow"):
            rev.error = (
                f"no runtime for model format {fmt} in the simulated cluster "
                "(sklearn, mlflow and huggingface are served)"
            )
            return
        from zenml_model_deployers.testing.kube_cluster import LoadedModel

        internal = f"ks-{rev.name}-{rev.digest[:6]}"
        spec = {
            "storageUri": model.get("storageUri") or "",
            "requirements": [fmt],
        }
        error = self.cluster._load_into_mlserver(internal, spec)
        if error:
            # A container's termination message: the end of the server's error.
            rev.error = " | ".join(ln.strip() for ln in error.strip().splitlines()[-2:])
            return
        rev.backend = LoadedModel(name, self.cluster.namespace, 0, internal, rev.digest)

    def _check_service_account(self, core: Any, name: str, sa: str) -> str:
        """The storage initializer's credentials: the ServiceAccount's Secrets must exist."""
        found = [s for s in self.cluster.objects("serviceaccounts") if s["metadata"]["name"] == sa]
        if not found:
            return f'serviceaccount "{sa}" not found'
        for ref in found[0].get("secrets") or []:
            error = self.cluster._check_secret(core, name, {"secretName": ref.get("name")})
            if error:
                return error
        return ""

    def _start_llm(self, rev: Revision, model: dict[str, Any]) -> None:
        from zenml_model_deployers.testing.kube_cluster import free_port

        args = [str(a) for a in model.get("args") or []]
        opts = dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)
        model_id = opts.get("model_id") or str(model.get("storageUri") or "").removeprefix("hf://")
        served = opts.get("model_name") or rev.name
        port = free_port()
        log = open(self.cluster._root / f"{rev.name}.log", "wb")  # noqa: SIM115 - kept with proc
        proc = subprocess.Popen(  # noqa: S603 - our own argv
            [
                sys.executable,
                "-m",
                "zenml_model_deployers.testing.vllm_standin",
                "serve",
                model_id,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--served-model-name",
                served,
                "--max-model-len",
                "512",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        import requests

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                text = (self.cluster._root / f"{rev.name}.log").read_text(errors="replace")
                rev.error = "\n".join(text.strip().splitlines()[-3:]) or "the server exited"
                return
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).status_code == 200:
                    rev.backend = LLMServer(proc, port, served)
                    return
            time.sleep(0.2)
        self._stop_proc(proc)
        rev.error = "the Hugging Face server did not become ready in 120 s"

    @staticmethod
    def _stop_proc(proc: subprocess.Popen[bytes]) -> None:
        import psutil

        from zenml_model_deployers.local.process import terminate_all

        with contextlib.suppress(psutil.Error):
            terminate_all([psutil.Process(proc.pid)], 10)
        with contextlib.suppress(Exception):
            proc.wait(timeout=5)

    def _release(self, rev: Revision | None, drain: bool = False) -> None:
        """Stops a revision's server (``drain``: once requests already routed to it ended)."""
        if rev is None or rev.backend is None:
            return
        backend, rev.backend = rev.backend, None
        if isinstance(backend, LLMServer):
            stop: Any = self._stop_proc
            arg: Any = backend.proc
        else:
            stop, arg = self.cluster._unload, backend.internal
        if drain:
            self.cluster.later(stop, arg)
        else:
            stop(arg)

    def close(self) -> None:
        """Stops every model server process this controller started (by pid), and the
        queue-proxy metrics port."""
        for name in list(self.states):
            self._drop(name)
        self.queue_proxy.close()

    def _set_status(
        self, custom: Any, name: str, status: dict[str, Any], merge_components: bool = False
    ) -> None:
        from kubernetes.client.exceptions import ApiException

        group, version = KSERVE
        if not merge_components:
            for key in ("components", "modelStatus", "canaryStatuses"):
                status.setdefault(key, None)
        with contextlib.suppress(ApiException):
            custom.patch_namespaced_custom_object_status(
                group,
                version,
                self.cluster.namespace,
                "inferenceservices",
                name,
                {"status": status},
            )

    # ----------------------------------------------------------------- gateway
    def route(self, method: str, host: str, path: str, body: bytes) -> tuple[int, bytes] | None:
        """Serves one gateway request for an InferenceService's host (None: not one).

        Args:
            method: HTTP method.
            host: the ``Host`` header (without port).
            path: the path.
            body: the request body.

        Returns:
            (status, body), or None when the host is no InferenceService's.
        """
        if not host.endswith(f".{self.cluster.namespace}.{DOMAIN}"):
            return None
        with self.lock:
            route = self.routes.get(host)
        if route is None or not route.backends:
            return 404, b'{"error": "no InferenceService serves this host"}'
        total = sum(p for _, p in route.backends)
        pick = random.uniform(0, total or 1)
        index = len(route.backends) - 1
        for i, (_, pct) in enumerate(route.backends):
            pick -= pct
            if pick < 0 and pct > 0:
                index = i
                break
        backend = route.backends[index][0]
        t0 = time.perf_counter()
        if isinstance(backend, LLMServer):
            answer = self._route_llm(method, path, body, backend)
        else:
            answer = self._route_model(method, path, body, route.name, backend)
        if route.revisions:  # Serverless: the revision's queue-proxy counts the request
            self.queue_proxy.observe(
                self.cluster.namespace,
                route.name,
                route.revisions[index],
                answer[0],
                (time.perf_counter() - t0) * 1000,
            )
        return answer

    def _route_llm(self, method: str, path: str, body: bytes, llm: LLMServer) -> tuple[int, bytes]:
        import requests

        if path.startswith("/openai/v1/"):
            upstream = path[len("/openai") :]
        elif path.startswith("/v1/models/"):
            return 200, json.dumps({"name": llm.served_name, "ready": True}).encode()
        else:
            return 404, json.dumps({"error": f"{path} is not served"}).encode()
        try:
            r = requests.request(
                method,
                f"http://127.0.0.1:{llm.port}{upstream}",
                data=body or None,
                headers={"Content-Type": "application/json"} if body else {},
                timeout=120,
            )
        except requests.RequestException as e:
            return 503, json.dumps({"error": f"upstream: {e}"}).encode()
        return r.status_code, r.content

    def _route_model(
        self, method: str, path: str, body: bytes, name: str, loaded: LoadedModel
    ) -> tuple[int, bytes]:
        mls = self.cluster._mls
        if path == f"/v1/models/{name}" and method == "GET":
            r = mls("GET", f"/v2/models/{loaded.internal}/ready")
            ready = r.status_code == 200
            return (200 if ready else 503), json.dumps({"name": name, "ready": ready}).encode()
        if path == f"/v1/models/{name}:predict" and method == "POST":
            return self._v1_predict(loaded, body)
        prefix = f"/v2/models/{name}"
        if path.startswith(prefix):
            r = mls(
                method,
                f"/v2/models/{loaded.internal}{path[len(prefix) :]}",
                data=body or None,
                headers={"Content-Type": "application/json"} if body else {},
            )
            content = r.content
            if r.status_code == 200 and content:
                with contextlib.suppress(ValueError):
                    data = r.json()
                    if isinstance(data, dict) and data.get("model_name") == loaded.internal:
                        data["model_name"] = name
                        content = json.dumps(data).encode()
            return r.status_code, content
        return 404, json.dumps({"error": f"model {path} not found"}).encode()

    def _v1_predict(self, loaded: LoadedModel, body: bytes) -> tuple[int, bytes]:
        """V1 over MLServer's V2: instances in, predictions out (the translation the module
        docstring states)."""
        import numpy as np

        try:
            rows = np.asarray(json.loads(body)["instances"], dtype=np.float64)
        except (ValueError, KeyError, TypeError) as e:
            return 400, json.dumps({"error": f"bad V1 request: {e}"}).encode()
        from zenml_model_deployers.kube.v2protocol import encode_v2

        r = self.cluster._mls("POST", f"/v2/models/{loaded.internal}/infer", json=encode_v2(rows))
        if r.status_code != 200:
            return r.status_code, r.content
        out = r.json()["outputs"][0]
        values = np.asarray(out["data"]).reshape(out["shape"]).tolist()
        return 200, json.dumps({"predictions": values}).encode()


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def _conds(*items: tuple[str, str, str, str]) -> list[dict[str, Any]]:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    out = []
    for t, status, reason, message in items:
        c: dict[str, Any] = {"type": t, "status": status, "lastTransitionTime": now}
        if reason:
            c["reason"] = reason
        if message:
            c["message"] = message
        out.append(c)
    return out


def _model_status(ok: bool, error: str, revision: str) -> dict[str, Any]:
    if ok:
        return {
            "transitionStatus": "UpToDate",
            "states": {"activeModelState": "Loaded", "targetModelState": "Loaded"},
        }
    return {
        "transitionStatus": "BlockedByFailedLoad",
        "states": {"activeModelState": "FailedToLoad", "targetModelState": "FailedToLoad"},
        "lastFailureInfo": {
            "reason": "ModelLoadFailed",
            "message": error,
            "modelRevisionName": revision,
        },
    }

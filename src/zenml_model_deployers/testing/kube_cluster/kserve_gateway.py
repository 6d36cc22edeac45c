"""The KServe part of the simulated cluster's ingress: the gateway that routes an
InferenceService's host (``{name}.{namespace}.example.com``) to its revisions' model servers by
their traffic shares, and the metrics Knative's queue-proxy sidecars export per revision.

Every model runs in one real MLServer; the gateway answers in the shape of the KServe runtime
that would serve it. Read from kserve/kserve (commit aaac4e29, 2026-08):

- Which runtime serves a format (``config/runtimes/*.yaml``, :data:`RUNTIMES`): auto-selection
  keeps the runtimes that support the model format *and* the protocol and takes the highest
  ``priority`` (``pkg/apis/serving/v1alpha1/servingruntime_types.go``: "the higher the value,
  the higher the priority"). So sklearn + V1 is ``kserve-sklearnserver``; sklearn + V2 is
  ``kserve-mlserver`` (priority 2 beats 1); mlflow is ``kserve-mlserver`` (V2 only); xgboost /
  lightgbm + V1 are ``kserve-xgbserver`` / ``kserve-lgbserver``. No runtime for the pair (mlflow +
  V1): the revision fails with "No runtime found to support specified framework/version"
  (``pkg/controller/v1beta1/inferenceservice/components/predictor.go``). An explicit
  ``runtime`` is used as given.
- KServe's own servers (``python/sklearnserver/sklearnserver/model.py``,
  ``python/xgbserver/xgbserver/model.py``, ``python/lgbserver/lgbserver/model.py``) all end in
  ``kserve.utils.utils.get_predict_response(payload, model.predict(instances), name)``:
  V1 answers ``{"predictions": result.tolist()}`` -- the model's own output, so a classifier's
  ``predict`` gives a flat ``[0, 1, 2]``, ``predict_proba`` / multi-output rows ``[[...], ...]``;
  V2 answers one output ``{"name": "output-0", "shape": list(result.shape), "datatype":
  from_np_dtype(result.dtype), "data": ...}`` in ``{"id", "model_name", "model_version": null,
  "outputs"}`` (``InferResponse.to_rest`` in ``python/kserve/kserve/protocol/infer_type.py``),
  ``id`` the request's or a new uuid.
- ``kserve-mlserver`` is MLServer itself: its V2 answer goes out as MLServer wrote it (output
  ``predict``, shape ``[n, 1]`` for a 1-D result, ``parameters.content_type``), named as the
  InferenceService; KServe's runtime sets no model version, so none is sent.

What differs from MLServer's runtimes is what KServe's xgbserver predicts: ``Booster.predict``,
which for a classifier is its probabilities (``binary:logistic``: the positive class's, ``[n]``;
``multi:softprob``: ``[n, k]``), where MLServer's xgboost runtime loads the scikit-learn
interface and answers ``XGBClassifier.predict``'s classes. For those two objectives (read from
the model's ``model.json``) the gateway asks MLServer for ``predict_proba`` and answers as the
booster would. lgbserver's ``Booster.predict`` is MLServer's lightgbm runtime's own.

MLServer adds a batch dimension to a 1-D result (``inject_batch_dimension``: ``[n]`` ->
``[n, 1]``); the KServe-server shapes take it off again, so a model whose ``predict`` really
returns ``(n, 1)`` answers ``[n]`` here (the one case the simulation cannot tell apart). The
simulation serves the sklearn, xgboost, lightgbm and mlflow formats (each with the MLServer
runtime of the format; ``make test`` builds an MLServer with all four), and ``huggingface``: the
vLLM stand-in behind the Hugging Face server's ``/openai/v1/...`` routes.
"""

from __future__ import annotations

import json
import random
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from zenml_model_deployers.testing.kube_cluster.mlserver import LoadedModel, MLServerHost

# KServe's default domain template: {name}.{namespace}.example.com
DOMAIN = "example.com"

# KServe's ServingRuntimes (config/runtimes/*.yaml) for the formats above:
# name -> ({model format: priority}, protocol versions).
RUNTIMES: dict[str, tuple[dict[str, int], tuple[str, ...]]] = {
    "kserve-sklearnserver": ({"sklearn": 1}, ("v1", "v2")),
    "kserve-mlserver": ({"sklearn": 2, "xgboost": 2, "lightgbm": 2, "mlflow": 1}, ("v2",)),
    "kserve-xgbserver": ({"xgboost": 1}, ("v1", "v2")),
    "kserve-lgbserver": ({"lightgbm": 1}, ("v1", "v2")),
}
# The runtimes that are KServe's own Python servers (their answers: get_predict_response).
KSERVE_SERVERS = ("kserve-sklearnserver", "kserve-xgbserver", "kserve-lgbserver")
NO_RUNTIME = "No runtime found to support specified framework/version"


# xgbserver: booster objectives whose Booster.predict is (a column of) predict_proba.
PROBA_OBJECTIVES = ("binary:logistic", "multi:softprob")


def booster_objective(storage_uri: str) -> str:
    """The objective of the XGBoost model in a folder's ``model.json`` ("" when not found).

    Args:
        storage_uri: the model folder.

    Returns:
        e.g. ``binary:logistic``.
    """
    from pathlib import Path

    try:
        learner = json.loads((Path(storage_uri) / "model.json").read_text())["learner"]
        return str(learner["objective"]["name"])
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def booster_request(body: dict[str, Any], loaded: LoadedModel) -> dict[str, Any]:
    """The V2 request MLServer gets for an xgbserver model: ``predict_proba`` where the
    booster predicts probabilities.

    Args:
        body: the V2 request.
        loaded: what serves it.

    Returns:
        The request to send.
    """
    if loaded.runtime != "kserve-xgbserver" or loaded.objective not in PROBA_OBJECTIVES:
        return body
    return {**body, "outputs": [{"name": "predict_proba"}]}


def booster_output(output: dict[str, Any], loaded: LoadedModel) -> dict[str, Any]:
    """MLServer's output as the booster predicts it (``binary:logistic``: the positive class's
    probability of ``predict_proba``).

    Args:
        output: one V2 output of MLServer.
        loaded: what serves it.

    Returns:
        The output.
    """
    if loaded.runtime != "kserve-xgbserver" or loaded.objective != "binary:logistic":
        return output
    import numpy as np

    proba = np.asarray(output["data"]).reshape(output["shape"])
    return {**output, "shape": [proba.shape[0]], "data": proba[:, 1].tolist()}


def runtime_error(model_format: str, protocol: str, runtime: str) -> str:
    """Why KServe runs no predictor for this model (KServe's words), "" when one serves it.

    Args:
        model_format: the model format.
        protocol: the protocol version.
        runtime: the explicit runtime ("" for none).

    Returns:
        The failure message, or "".
    """
    if not runtime:
        return "" if pick_runtime(model_format, protocol) else NO_RUNTIME
    if runtime not in RUNTIMES:
        return ""  # the user's own ServingRuntime: the simulation serves it as MLServer
    formats, protocols = RUNTIMES[runtime]
    if protocol not in protocols:
        return "Specified runtime does not support specified protocol version"
    if model_format not in formats:
        return "Specified runtime does not support specified framework/version"
    return ""


def pick_runtime(model_format: str, protocol: str, runtime: str = "") -> str:
    """The ServingRuntime KServe runs a predictor with (see the module docstring).

    Args:
        model_format: ``spec.predictor.model.modelFormat.name``.
        protocol: ``protocolVersion`` (``v1`` when unset).
        runtime: an explicit ``spec.predictor.model.runtime``.

    Returns:
        The runtime's name; "" when none supports the format and protocol.
    """
    if runtime:
        return runtime
    supporting = [
        (formats[model_format], name)
        for name, (formats, protocols) in RUNTIMES.items()
        if model_format in formats and protocol in protocols
    ]
    return max(supporting)[1] if supporting else ""


@dataclass
class LLMServer:
    """A vLLM stand-in process serving one Hugging Face revision."""

    proc: subprocess.Popen[bytes]
    port: int
    served_name: str


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

            from zenml_model_deployers.testing.kube_cluster.mlserver import free_port

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


class KServeGateway:
    """Routes InferenceService hosts; the controller sets :attr:`routes`.

    Attributes:
        routes: host -> where its requests go.
        lock: guards ``routes``.
        queue_proxy: what the Serverless revisions' queue-proxies counted.
    """

    def __init__(self, namespace: str, mlserver: MLServerHost) -> None:
        """Binds to the cluster's namespace and model server.

        Args:
            namespace: the namespace whose hosts it serves.
            mlserver: the model server.
        """
        self.namespace = namespace
        self.mlserver = mlserver
        self.routes: dict[str, Route] = {}
        self.lock = threading.Lock()
        self.queue_proxy = QueueProxyMetrics()

    def host(self, name: str) -> str:
        """The InferenceService's host (KServe's default domain template).

        Args:
            name: the InferenceService.

        Returns:
            ``{name}.{namespace}.example.com``.
        """
        return f"{name}.{self.namespace}.{DOMAIN}"

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
        if not host.endswith(f".{self.namespace}.{DOMAIN}"):
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
                self.namespace,
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
        mls = self.mlserver.request
        if path == f"/v1/models/{name}" and method == "GET":
            r = mls("GET", f"/v2/models/{loaded.internal}/ready")
            ready = r.status_code == 200
            return (200 if ready else 503), json.dumps({"name": name, "ready": ready}).encode()
        if path == f"/v1/models/{name}:predict" and method == "POST":
            return self._v1_predict(loaded, body)
        prefix = f"/v2/models/{name}"
        if path.startswith(prefix):
            rest = path[len(prefix) :]
            infer = rest == "/infer" and method == "POST"
            if infer and body:
                try:
                    body = json.dumps(booster_request(json.loads(body), loaded)).encode()
                except ValueError:
                    pass  # not JSON: MLServer answers it
            code, content = self.mlserver.forward_v2(method, loaded, rest, body, name)
            if code == 200 and infer:
                content = json.dumps(v2_answer(json.loads(content), loaded)).encode()
            return code, content
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

        r = self.mlserver.request(
            "POST",
            f"/v2/models/{loaded.internal}/infer",
            json=booster_request(encode_v2(rows), loaded),
        )
        if r.status_code != 200:
            return r.status_code, r.content
        output = booster_output(r.json()["outputs"][0], loaded)
        return 200, json.dumps({"predictions": kserve_result(output)}).encode()


def kserve_result(output: dict[str, Any]) -> Any:
    """The model's own result from an MLServer output: its shape without the batch dimension
    MLServer adds to a 1-D result (``[n, 1]`` -> ``[n]``).

    Args:
        output: one V2 output.

    Returns:
        The result as nested lists (what ``result.tolist()`` gives in KServe's servers).
    """
    import numpy as np

    shape = list(output["shape"])
    if len(shape) == 2 and shape[1] == 1:
        shape = shape[:1]
    return np.asarray(output["data"]).reshape(shape).tolist()


def v2_answer(body: dict[str, Any], loaded: LoadedModel) -> dict[str, Any]:
    """MLServer's V2 inference answer as the runtime sends it (see the module docstring).

    Args:
        body: MLServer's answer, already named as the InferenceService.
        loaded: what serves it (its serving runtime, its booster's objective).

    Returns:
        KServe's own servers: ``{"id", "model_name", "model_version": None, "outputs":
        [{"name": "output-0", "shape", "datatype", "data"}]}``; MLServer: its answer without
        a model version.
    """
    import numpy as np

    if loaded.runtime not in KSERVE_SERVERS:
        return {k: v for k, v in body.items() if k != "model_version"}
    out = booster_output(body["outputs"][0], loaded)
    result = np.asarray(kserve_result(out))
    output = {
        "name": "output-0",
        "shape": list(result.shape),
        "datatype": out["datatype"],
        "data": result.reshape(-1).tolist(),
    }
    return {
        "id": body.get("id"),
        "model_name": body.get("model_name"),
        "model_version": None,
        "outputs": [output],
    }

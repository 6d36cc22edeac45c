"""kube/prometheus.py against the Prometheus double, without a cluster: an in-process target
exports a per-model counter and latency histogram (as a KServe or custom server would); the
double scrapes it; the client's cumulative and windowed readings, bearer auth from a ZenML
secret (never echoed), and the double's strictness (an unknown query is a 400)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from zenml.client import Client

from zenml_model_deployers.errors import DeploymentError
from zenml_model_deployers.kube.prometheus import MetricNames, PrometheusClient, version_matcher
from zenml_model_deployers.testing.prometheus_double import PrometheusDouble

NAMES = MetricNames(success="inf_ok_total", failure="inf_failed_total", histogram="inf_seconds")
TOKEN = "prom-tok-8f2c1d"  # noqa: S105 - a test token


@pytest.fixture(scope="module")
def target() -> Iterator[tuple[str, dict[str, Any]]]:
    """A /metrics endpoint with inf_ok/inf_failed counters and an inf_seconds histogram."""
    registry = CollectorRegistry()
    metrics = {
        "ok": Counter("inf_ok", "ok", ["model"], registry=registry),
        "failed": Counter("inf_failed", "failed", ["model"], registry=registry),
        "seconds": Histogram(
            "inf_seconds", "latency", ["model"], buckets=(0.01, 0.1, 1.0), registry=registry
        ),
    }

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's API
            body = generate_latest(registry)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/metrics", metrics
    server.shutdown()
    server.server_close()


def test_cumulative_and_windowed_readings_with_bearer_auth(
    target: tuple[str, dict[str, Any]],
) -> None:
    url, m = target
    Client().create_secret(name="zmd-prom", values={"token": TOKEN})
    with PrometheusDouble([url], scrape_interval=0.1, token=TOKEN) as prom:
        client = PrometheusClient(prom.url, "{{zmd-prom.token}}")
        match = version_matcher("model", "iris")
        assert client.revision_metrics("h", match, NAMES).requests == 0  # no data: zero
        for _ in range(18):
            m["ok"].labels(model="iris_1").inc()
            m["seconds"].labels(model="iris_1").observe(0.005)
        m["ok"].labels(model="iris_2").inc()
        m["seconds"].labels(model="iris_2").observe(0.5)
        m["failed"].labels(model="iris_2").inc()
        m["ok"].labels(model="iris-c1234_1").inc(100)  # another Model: not counted
        prom.wait_for_scrape()
        cum = client.revision_metrics("h", match, NAMES)
        assert (cum.requests, cum.errors) == (20, 1)
        assert cum.latency_bounds == [0.01, 0.1, 1.0] and cum.latency_counts == [18, 18, 19, 19]
        assert cum.latency_p50_ms is not None and cum.latency_p50_ms <= 10
        assert cum.latency_p95_ms is not None and cum.latency_p95_ms > 100
        windowed = client.revision_metrics("h", match, NAMES, window=60)
        assert windowed.window_s == 60 and windowed.requests <= 20
        assert (
            'histogram_quantile(0.95, sum by (le) (rate(inf_seconds_bucket{model=~"iris_[0-9]+"}[60s])))'
            in prom.queries
        )

        wrong = PrometheusClient(prom.url, None)
        with pytest.raises(DeploymentError, match="answered 401") as ei:
            wrong.query('sum(inf_ok_total{model="x"})')
        assert "unauthorized: Unauthorized" in str(ei.value)
        for bad in ('avg(inf_ok_total{model="x"})', "sum(up)", 'sum(x{a=~"("})'):
            with pytest.raises(DeploymentError, match="answered 400") as ei:
                client.query(bad)
            assert "bad_data: parse error" in str(ei.value)
            assert TOKEN not in str(ei.value)
    with pytest.raises(DeploymentError, match="unreachable"):
        client.query('sum(inf_ok_total{model="x"})')


def test_a_plain_token_is_refused() -> None:
    from zenml_model_deployers.flavors.seldon.flavor import SeldonDeployerConfig

    with pytest.raises(ValueError, match="secret reference") as ei:
        SeldonDeployerConfig(prometheus_url="http://p:9090", prometheus_token="abc-plain-1")
    assert "abc-plain-1" not in str(ei.value)


def test_component_token_is_a_reference_handed_on_unresolved() -> None:
    """On a cluster component, the token is a ZenML secret reference (ZenML refuses one on a
    field with a field validator: the check is the model's); a deployment takes it from the
    component as the reference, never resolved (the secret need not exist to configure)."""
    from zenml_model_deployers.flavors.kserve.config import KServeDeploymentConfig
    from zenml_model_deployers.flavors.kserve.flavor import KServeDeployerConfig
    from zenml_model_deployers.flavors.seldon.flavor import SeldonDeployerConfig
    from zenml_model_deployers.kube.client import component_defaults

    ref = "{{zmd-no-such-secret.token}}"
    for cls in (SeldonDeployerConfig, KServeDeployerConfig):
        component = cls(prometheus_url="http://p:9090", prometheus_token=ref)
        config = KServeDeploymentConfig(deployment_name="iris", model_uri="gs://b/iris")
        update = component_defaults(config, component)
        assert update["prometheus_token"] == ref and update["prometheus_url"] == "http://p:9090"
        assert config.model_copy(update=update).prometheus_token == ref


def test_storage_secret_is_a_name_on_the_component_and_on_the_deployment() -> None:
    """Credentials given where a secret's name belongs are refused, without being echoed, on
    both cluster flavors' component settings and deployment configs."""
    from zenml_model_deployers.flavors.kserve.config import KServeDeploymentConfig
    from zenml_model_deployers.flavors.kserve.flavor import KServeDeployerConfig
    from zenml_model_deployers.flavors.seldon.flavor import SeldonDeployerConfig

    base = {"deployment_name": "iris", "model_uri": "gs://b/iris"}
    for make in (
        lambda v: SeldonDeployerConfig(storage_secret=v),
        lambda v: KServeDeployerConfig(storage_secret=v),
        lambda v: KServeDeploymentConfig(**base, storage_secret=v),
    ):
        for given in ("AKIAPLAIN3:wJalrSecret3", "{{gcs.key}}", "key=SecretPlain3"):
            # (ZenML refuses a reference on a component attribute first, in its own words.)
            with pytest.raises(ValueError, match="name\\* of a ZenML secret|secret ref") as ei:
                make(given)
            assert "Plain3" not in str(ei.value) and "gcs.key" not in str(ei.value)
        assert make("gcs-reader").storage_secret == "gcs-reader"


def test_kserve_prometheus_settings_are_secret_references_outside_the_hash() -> None:
    """zmd-kserve takes the same settings, on the component and on the shared cluster config:
    a plain token is refused without being echoed; where Prometheus is does not change the
    revision; a revision label that is not a Kubernetes name never reaches PromQL."""
    from zenml_model_deployers.flavors.kserve.config import KServeDeploymentConfig
    from zenml_model_deployers.flavors.kserve.flavor import KServeDeployerConfig
    from zenml_model_deployers.kube.prometheus import label_matcher

    base = {"deployment_name": "iris", "model_uri": "gs://b/iris"}
    for make in (
        lambda t: KServeDeployerConfig(prometheus_url="http://p:9090", prometheus_token=t),
        lambda t: KServeDeploymentConfig(**base, prometheus_url="http://p", prometheus_token=t),
    ):
        with pytest.raises(ValueError, match="secret reference") as ei:
            make("abc-plain-2")
        assert "abc-plain-2" not in str(ei.value)
    plain = KServeDeploymentConfig(**base)
    watched = KServeDeploymentConfig(
        **base, prometheus_url="http://p:9090", prometheus_token="{{prometheus.token}}"
    )
    assert plain.config_hash() == watched.config_hash()
    assert label_matcher(revision_name="iris-predictor-00002") == (
        'revision_name="iris-predictor-00002"'
    )
    with pytest.raises(ValueError, match="not a Kubernetes resource name"):
        label_matcher(revision_name='x"} or vector(1) #')

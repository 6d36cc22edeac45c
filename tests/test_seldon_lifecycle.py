"""zmd-seldon beyond the conformance suite: the clear errors before or at the first call,
the restored spec after a failed update, logs, and pipelines deploying a model object."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from kube_support import (  # noqa: F401
    LoopingClient,
    api_only,
    cluster,
    model_dirs,
    seldon_deployer,
    seldon_stack,
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
from zenml_model_deployers.flavors.seldon.backend import MODEL
from zenml_model_deployers.flavors.seldon.config import SeldonDeploymentConfig
from zenml_model_deployers.kube.client import KubeTarget
from zenml_model_deployers.kube.resources import KubeNamespace
from zenml_model_deployers.testing.kube_cluster import SimulatedCluster
from zenml_model_deployers.testing.prometheus_double import PrometheusDouble

SAMPLE = [[0.0, 1.0], [1.0, 0.0]]


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _config(uri: str, name: str, **kw: Any) -> SeldonDeploymentConfig:
    return SeldonDeploymentConfig(deployment_name=name, model_name=name, model_uri=uri, **kw)


def _names(c: SimulatedCluster, plural: str, part: str) -> list[str]:
    """The names of a kind's objects that contain `part`."""
    return [o["metadata"]["name"] for o in c.objects(plural) if part in o["metadata"]["name"]]


def _model_spec(c: SimulatedCluster, name: str) -> dict[str, Any] | None:
    found = [m for m in c.objects("models") if m["metadata"]["name"] == name]
    return found[0]["spec"] if found else None


@step
def train() -> Any:
    """A trained classifier (predicts 1)."""
    return sklearn_model(1)


def _flavor_writes(c: SimulatedCluster) -> int:
    return sum(
        1 for r in c.log.requests if not r["by_controller"] and r["verb"] in ("create", "patch")
    )


def test_errors_before_anything_is_made(
    seldon_deployer: Any,  # noqa: F811
    cluster: SimulatedCluster,  # noqa: F811
    api_only: SimulatedCluster,  # noqa: F811
    model_dirs: dict[str, str],  # noqa: F811
    tmp_path: Any,
) -> None:
    """No kubeconfig, missing namespace, Seldon not installed, RBAC 403: each a clear typed
    error, and neither a resource nor a service row is left."""
    uri = model_dirs["a"]
    name = _name("err")
    missing = tmp_path / "kube" / "config"
    with pytest.raises(ConfigurationError, match=f"No kubeconfig at {missing}"):
        seldon_deployer.deploy(_config(uri, name, kubeconfig=str(missing)))
    with pytest.raises(ConfigurationError, match="Namespace 'nope' does not exist"):
        seldon_deployer.deploy(_config(uri, name, namespace="nope"))
    with pytest.raises(ConfigurationError, match="Seldon Core 2 is not installed in this cluster"):
        seldon_deployer.deploy(
            _config(uri, name, kubeconfig=api_only.kubeconfig, kubernetes_context=api_only.context)
        )
    with pytest.raises(ConfigurationError, match="SKLEARN_SERVER"):
        seldon_deployer.build_config(
            model_uri=uri, deployment_name=name, seldon_api="v1", implementation="SKLEARN"
        )
    cluster.forbid("create", "models")
    try:
        with pytest.raises(DeploymentError, match="403 Forbidden") as err:
            seldon_deployer.deploy(_config(uri, name))
    finally:
        cluster.allow_all()
    assert 'cannot create resource "models" in API group mlops.seldon.io' in str(err.value)
    assert seldon_deployer.find_deployment(name) is None
    assert _model_spec(cluster, name) is None


def _their_model(
    c: SimulatedCluster, name: str, uri: str, requirement: str
) -> tuple[KubeNamespace, dict[str, Any]]:
    """Creates a Model of that name as another team would (without our labels)."""
    theirs = KubeNamespace(KubeTarget(kubeconfig=c.kubeconfig, namespace=c.namespace), "someone")
    manifest = {
        "apiVersion": "mlops.seldon.io/v1alpha1",
        "kind": "Model",
        "metadata": {"name": name, "labels": {"team": "fraud"}},
        "spec": {"storageUri": uri, "requirements": [requirement]},
    }
    theirs.create(MODEL, manifest)
    return theirs, manifest


def test_a_name_taken_by_others_is_refused_and_untouched(
    seldon_deployer: Any,  # noqa: F811
    cluster: SimulatedCluster,  # noqa: F811
    model_dirs: dict[str, str],  # noqa: F811
) -> None:
    """A Model of the same name that we do not own: refused; it keeps its spec and exists."""
    name = _name("taken")
    theirs, manifest = _their_model(cluster, name, "gs://their-bucket/model", "xgboost")
    with pytest.raises(DeploymentExistsError, match="does not own it"):
        seldon_deployer.deploy(_config(model_dirs["a"], name))
    assert _model_spec(cluster, name) == manifest["spec"]
    assert seldon_deployer.find_deployment(name) is None
    theirs.delete(MODEL, name)


def test_a_refusal_by_a_serving_foreign_model_is_fast_and_leaves_nothing_of_ours(
    seldon_deployer: Any,  # noqa: F811
    cluster: SimulatedCluster,  # noqa: F811
    model_dirs: dict[str, str],  # noqa: F811
) -> None:
    """A Model of that name made by someone else, loaded and serving: the deploy (with storage
    credentials) is refused before anything is made, at once (it waited 33 s for the mesh to
    forget a name the foreign Model serves), and no Secret of ours stays in the cluster."""
    import time

    from zenml.client import Client

    name = _name("foreign-s")
    secret = f"{name}-creds"
    Client().create_secret(secret, values={"AWS_ACCESS_KEY_ID": "zmd-planted-key-4d1e"})
    theirs, manifest = _their_model(cluster, name, model_dirs["b"], "sklearn")
    try:
        deadline = time.monotonic() + 120
        while not any(
            c.get("type") == "ModelReady" and c.get("status") == "True"
            for m in cluster.objects("models")
            if m["metadata"]["name"] == name
            for c in (m.get("status") or {}).get("conditions") or []
        ):
            assert time.monotonic() < deadline, "their Model did not become ready"
            time.sleep(0.2)
        t0 = time.monotonic()
        with pytest.raises(DeploymentExistsError, match="does not own it"):
            seldon_deployer.deploy(_config(model_dirs["a"], name, storage_secret=secret))
        took = time.monotonic() - t0
        assert took < 10, f"the refusal took {took:.1f} s"
        assert _names(cluster, "secrets", name) == []
        assert _model_spec(cluster, name) == manifest["spec"]
        assert seldon_deployer.find_deployment(name) is None
    finally:
        theirs.delete(MODEL, name)
        Client().delete_secret(secret)


def test_failed_update_restores_the_previous_spec_and_logs(
    seldon_deployer: Any,  # noqa: F811
    cluster: SimulatedCluster,  # noqa: F811
    model_dirs: dict[str, str],  # noqa: F811
) -> None:
    """A model MLServer cannot load: DeploymentError with MLServer's words, the Model's spec is
    patched back (same generation line, previous storage URI), the old model answers; the logs
    show the Model's conditions and the server pod's log."""
    name = _name("roll")
    svc = seldon_deployer.deploy(_config(model_dirs["a"], name))
    try:
        with pytest.raises(DeploymentError) as err:
            seldon_deployer.deploy(_config(model_dirs["broken"], name))
        assert "put back on the previous revision" in str(err.value)
        assert err.value.backend_message
        spec = _model_spec(cluster, name)
        assert spec is not None and spec["storageUri"] == model_dirs["a"]
        again = seldon_deployer.find_deployment(name)
        assert again.status.config_hash == svc.status.config_hash
        assert again.predict(SAMPLE) == [0, 0]
        lines = list(again.get_logs(tail=200))
        assert any(f"[Model {name}] ModelReady=True" in ln for ln in lines), lines[:5]
        assert any(ln.startswith("[mlserver-0] ") for ln in lines)
        cluster.forbid("get", "pods/log")
        try:
            lines = list(again.get_logs(tail=5))
        finally:
            cluster.allow_all()
        assert any("cannot read the logs of pod mlserver-0 (403" in ln for ln in lines), lines
    finally:
        seldon_deployer.delete(seldon_deployer.find_deployment(name))


def test_a_folder_seldons_agent_cannot_load_fails_and_the_previous_model_serves(
    seldon_deployer: Any,  # noqa: F811
    cluster: SimulatedCluster,  # noqa: F811
    model_dirs: dict[str, str],  # noqa: F811
    tmp_path: Any,
) -> None:
    """A folder without model-settings.json loads only as Seldon Core 2's agent can make one
    (the first requirement it knows, an artifact of that runtime's extensions: an ``iris.pkl``
    does); otherwise the update fails with the agent's words (typed, carried as the backend's
    message), the Model's spec is put back and the previous model answers."""
    import joblib

    name = _name("noset")
    pkl = tmp_path / "pkl"
    pkl.mkdir()
    joblib.dump(sklearn_model(1), pkl / "iris.pkl")
    xgb_only = tmp_path / "json-only"
    xgb_only.mkdir()
    (xgb_only / "model.json").write_text("{}")
    svc = seldon_deployer.deploy(_config(model_dirs["a"], name))
    try:
        svc = seldon_deployer.deploy(_config(str(pkl), name))
        assert svc.predict(SAMPLE) == [1, 1]
        cases = (
            (str(xgb_only), ["sklearn"], f"Failed to find sklearn artifact in {xgb_only}"),
            # MLServer has the capability (it schedules), but the agent makes no settings for it.
            (model_dirs["a"], ["huggingface"], "Can't create model-settings from requirements"),
        )
        for uri, requirements, words in cases:
            with pytest.raises(DeploymentError) as err:
                seldon_deployer.deploy(_config(uri, name, requirements=requirements))
            assert words in str(err.value.backend_message), err.value.backend_message
            assert "put back on the previous revision" in str(err.value)
            spec = _model_spec(cluster, name)
            assert spec is not None and spec["storageUri"] == str(pkl)
            assert seldon_deployer.find_deployment(name).predict(SAMPLE) == [1, 1]
    finally:
        seldon_deployer.delete(seldon_deployer.find_deployment(name))


def test_core1_v2_serves_a_model_object_as_its_graph_node(
    seldon_deployer: Any,  # noqa: F811
) -> None:
    """Core 1 with the V2 protocol: the prepackaged server names the model ``classifier`` (the
    node the executor calls) in MLServer's environment, which a model-settings.json in the
    folder would override (every request then 404): the upload has none, and it answers."""
    from pathlib import Path

    name = _name("v1v2")
    config = seldon_deployer.build_config(
        model=sklearn_model(1), deployment_name=name, seldon_api="v1", protocol="v2"
    )
    assert not (Path(config.model_uri) / "model-settings.json").exists()
    svc = seldon_deployer.deploy(config, timeout=60)
    try:
        assert svc.prediction_url.endswith(f"/{name}/v2/models/classifier/infer")
        assert svc.predict(SAMPLE) == [1, 1]
    finally:
        seldon_deployer.delete(svc)


def test_pipeline_deploys_a_model_object_once(
    seldon_deployer: Any,  # noqa: F811
    seldon_stack: str,  # noqa: F811
    cluster: SimulatedCluster,  # noqa: F811
) -> None:
    """seldon_deployer_step(model=...) uploads model.joblib to the artifact store and serves it;
    the same model on a second run is the same URI and revision (no write to the cluster)."""
    from zenml import pipeline
    from zenml.client import Client
    from zenml_model_deployers.steps import seldon_deployer_step

    name = _name("obj")

    @pipeline(enable_cache=False)
    def train_and_deploy() -> None:
        seldon_deployer_step(model=train(), deployment_name=name, timeout=60)

    try:
        first = train_and_deploy.with_options(run_name=f"{name}-1")()
        svc = Client().get_pipeline_run(first.id).steps["seldon_deployer_step"].outputs
        service = svc["seldon_deployment"][0].load()
        root = str(Client().active_stack.artifact_store.path)
        assert service.config.model_uri.startswith(root)
        assert service.predict(SAMPLE) == [1, 1]
        writes = _flavor_writes(cluster)
        train_and_deploy.with_options(run_name=f"{name}-2")()
        again = seldon_deployer.find_deployment(name)
        assert again.config.model_uri == service.config.model_uri
        assert again.status.revision == service.status.revision == 1
        assert _flavor_writes(cluster) == writes
    finally:
        found = seldon_deployer.find_deployment(name)
        if found is not None:
            seldon_deployer.delete(found)


def test_the_offline_example_runs_end_to_end() -> None:
    """`python examples/seldon/run.py --offline` as a user runs it (own process, own simulated
    cluster and throw-away ZenML config; it cleans up)."""
    from example_support import run_offline_example

    out = run_offline_example("seldon", timeout=300)
    assert "deployed_model_url: http://127.0.0.1:" in out
    assert "same URL, revision 2" in out
    assert "stopped (Model unloaded): inactive" in out
    assert "deleted;" in out


def test_canary_split_promote_and_rollback(
    seldon_deployer: Any,  # noqa: F811
    cluster: SimulatedCluster,  # noqa: F811
    model_dirs: dict[str, str],  # noqa: F811
) -> None:
    """canary_percent=30: a candidate Model and an Experiment with weights 70/30 (the CRD's
    fields), ~30 % of 300 requests answered by it; rollback removes both; a broken candidate
    is refused with Seldon's words and the split is as before; promote makes the candidate the
    main Model on the same URL."""
    name = _name("can")
    svc = seldon_deployer.deploy(_config(model_dirs["a"], name))
    url = svc.prediction_url
    try:
        # A progressive rollout needs per-revision metrics, which need a Prometheus: without
        # `prometheus_url`, refused before anything is made, naming the setting.
        with pytest.raises(ConfigurationError, match="cannot report request metrics") as ei:
            seldon_deployer.deploy(_config(model_dirs["b"], name), policy="canary")
        assert "prometheus_url" in str(ei.value)
        assert _names(cluster, "experiments", name) == []
        assert _names(cluster, "models", name) == [name]
        svc = seldon_deployer.deploy(_config(model_dirs["b"], name), canary_percent=30)
        exp = [e for e in cluster.objects("experiments") if e["metadata"]["name"] == name]
        assert exp and exp[0]["spec"]["default"] == name
        assert [c["weight"] for c in exp[0]["spec"]["candidates"]] == [70, 30]
        share, failures = share_of_b(svc, 300)
        assert failures == []
        assert 0.2 <= share <= 0.4, share
        seldon_deployer.rollback(svc)
        assert _names(cluster, "experiments", name) == []
        assert _names(cluster, "models", name) == [name]
        share, failures = share_of_b(svc, 50)
        assert failures == [] and share == 0.0
        with pytest.raises(DeploymentError) as err:
            seldon_deployer.deploy(_config(model_dirs["broken"], name), canary_percent=30)
        assert err.value.backend_message
        assert _names(cluster, "experiments", name) == []
        svc = seldon_deployer.find_deployment(name)
        svc = seldon_deployer.deploy(_config(model_dirs["b"], name), canary_percent=30)
        svc = seldon_deployer.promote(svc)
        assert svc.prediction_url == url
        assert svc.config.model_uri == model_dirs["b"]
        spec = _model_spec(cluster, name)
        assert spec is not None and spec["storageUri"] == model_dirs["b"]
        assert _names(cluster, "models", name) == [name]
        share, failures = share_of_b(svc, 50)
        assert failures == [] and share == 1.0
        assert cluster.log.rejected == []
    finally:
        found = seldon_deployer.find_deployment(name)
        if found is not None:
            seldon_deployer.delete(found)
        assert [m for m in cluster.objects("models") if name in m["metadata"]["name"]] == []


def test_core1_canary_predictor_and_promote(
    seldon_deployer: Any,  # noqa: F811
    cluster: SimulatedCluster,  # noqa: F811
    model_dirs: dict[str, str],  # noqa: F811
) -> None:
    """Core 1: a canary is a second predictor with `traffic`; about half of 100 requests reach
    it at 50 %; promote leaves one predictor serving the candidate on the same URL."""
    name = _name("v1can")
    svc = seldon_deployer.deploy(_config(model_dirs["a"], name, seldon_api="v1"))
    url = svc.prediction_url
    assert url.endswith(f"/seldon/{cluster.namespace}/{name}/api/v1.0/predictions")
    try:
        # Metrics per revision are read for Core 2 only: a rollout is refused up front.
        with pytest.raises(ConfigurationError, match="only for Seldon Core 2"):
            seldon_deployer.deploy(
                _config(
                    model_dirs["b"], name, seldon_api="v1", prometheus_url="http://127.0.0.1:9"
                ),
                policy="canary",
            )
        before = [d for d in cluster.objects("seldondeployments") if d["metadata"]["name"] == name]
        assert [p["graph"]["modelUri"] for p in before[0]["spec"]["predictors"]] == [
            model_dirs["a"]
        ]
        svc = seldon_deployer.deploy(
            _config(model_dirs["b"], name, seldon_api="v1"), canary_percent=50
        )
        sdep = [d for d in cluster.objects("seldondeployments") if d["metadata"]["name"] == name]
        assert [(p["name"], p["traffic"]) for p in sdep[0]["spec"]["predictors"]] == [
            ("default", 50),
            ("canary", 50),
        ]
        share, failures = share_of_b(svc, 100)
        assert failures == [] and 0.3 <= share <= 0.7, share
        svc = seldon_deployer.promote(svc)
        sdep = [d for d in cluster.objects("seldondeployments") if d["metadata"]["name"] == name]
        predictors = sdep[0]["spec"]["predictors"]
        assert [p["name"] for p in predictors] == ["default"]
        assert predictors[0]["graph"]["modelUri"] == model_dirs["b"]
        assert svc.prediction_url == url
        share, failures = share_of_b(svc, 20)
        assert failures == [] and share == 1.0
    finally:
        found = seldon_deployer.find_deployment(name)
        if found is not None:
            seldon_deployer.delete(found)


def test_cluster_credentials_from_a_zenml_service_connector(
    seldon_deployer: Any,  # noqa: F811
    cluster: SimulatedCluster,  # noqa: F811
    model_dirs: dict[str, str],  # noqa: F811
    tmp_path: Any,
) -> None:
    """A ZenML Kubernetes service connector (token auth) gives the client: the deployment
    serves with no kubeconfig at all, and the token stays in ZenML."""
    from zenml.client import Client

    token = "zmd-simulated-token"
    connector, _ = Client().create_service_connector(
        name=_name("k8s-sim"),
        connector_type="kubernetes",
        auth_method="token",
        resource_type="kubernetes-cluster",
        configuration={
            "server": cluster.api_url,
            "token": token,
            "cluster_name": "simulated",
            "insecure": True,
        },
        verify=False,
    )
    name = _name("conn")
    cfg = _config(
        model_dirs["b"],
        name,
        connector_id=str(connector.id),
        kubeconfig=str(tmp_path / "no-kubeconfig-here"),
    )
    svc = seldon_deployer.deploy(cfg)
    try:
        assert svc.predict(SAMPLE) == [1, 1]
        row = Client().get_service(svc.uuid).model_dump_json()
        assert token not in row
    finally:
        seldon_deployer.delete(svc)
    assert _names(cluster, "models", name) == []


# ----------------------------------------------------------------- progressive rollouts


@pytest.fixture(scope="module")
def prometheus(cluster: SimulatedCluster) -> Iterator[PrometheusDouble]:  # noqa: F811
    """A Prometheus scraping the cluster's MLServer every 0.2 s."""
    with PrometheusDouble([cluster.metrics_url], scrape_interval=0.2) as p:
        yield p


FAST = {"steps": [50, 100], "interval": 1.0, "min_requests": 5, "max_error_rate": 0.05}


def test_rollout_promotes_a_healthy_candidate_on_prometheus_metrics(
    seldon_deployer: Any,  # noqa: F811
    cluster: SimulatedCluster,  # noqa: F811
    model_dirs: dict[str, str],  # noqa: F811
    prometheus: PrometheusDouble,
) -> None:
    """policy='canary' on Seldon with a Prometheus that scrapes MLServer: each step's numbers
    come from it (the queries name every version of each Model), zero failed requests, the
    candidate promoted on the same URL; `zmd models describe --stats` shows Prometheus'
    numbers."""
    name = _name("roll")
    prom = {"prometheus_url": prometheus.url}
    svc = seldon_deployer.deploy(_config(model_dirs["a"], name, **prom))
    url = svc.prediction_url
    try:
        client = LoopingClient(svc)
        try:
            svc = seldon_deployer.deploy(
                _config(model_dirs["b"], name, **prom), policy="canary", rollout=FAST
            )
        finally:
            log = client.finish()
        assert [code for _, code in log if code != 200] == []
        record = svc.last_rollout
        assert record.verdict == "promoted"
        assert [s.percent for s in record.steps] == [50, 100]
        assert all(s.passed and s.candidate.requests >= 5 for s in record.steps)
        assert record.steps[0].stable.requests >= 5
        print(
            f"seldon rollout promoted: {record.duration_s:.1f} s, {record.overhead_s:.1f} s "
            f"beyond the bakes, {len(log)} client requests, 0 failed"
        )
        assert svc.prediction_url == url and svc.config.model_uri == model_dirs["b"]
        assert _names(cluster, "models", name) == [name]
        assert _names(cluster, "experiments", name) == []
        candidate = f'model=~"{name}-c{record.candidate[:10]}_[0-9]+"'
        assert f"sum(model_infer_request_success_total{{{candidate}}})" in prometheus.queries

        for _ in range(10):
            svc.predict(SAMPLE)
        prometheus.wait_for_scrape()
        res = CliRunner().invoke(zmd, ["models", "describe", name, "--stats", "-o", "json"])
        assert res.exit_code == 0, res.output
        stats = json.loads(res.output)["stats"][svc.status.config_hash]
        assert stats["requests"] >= 10 and stats["error_rate"] == 0.0, stats
        assert stats["window_s"] == 300
        assert any(
            q.startswith("sum(increase(model_infer_request_success_total{")
            for q in prometheus.queries
        )

        # Prometheus failing: the rollout is refused or stopped with its words, the stable
        # revision keeps serving, nothing is left.
        prometheus.fail_next(1)
        with pytest.raises(DeploymentError, match="answered 503") as ei:
            seldon_deployer.deploy(
                _config(model_dirs["a"], name, **prom), policy="canary", rollout=FAST
            )
        assert "unavailable: Service Unavailable" in str(ei.value)
        closed = f"http://127.0.0.1:{_closed_port()}"
        with pytest.raises(DeploymentError, match="unreachable"):
            seldon_deployer.deploy(
                _config(model_dirs["a"], name, prometheus_url=closed),
                policy="canary",
                rollout=FAST,
            )
        assert _names(cluster, "models", name) == [name]
        assert _names(cluster, "experiments", name) == []
        assert seldon_deployer.find_deployment(name).config.model_uri == model_dirs["b"]
        assert cluster.log.rejected == []
    finally:
        found = seldon_deployer.find_deployment(name)
        if found is not None:
            seldon_deployer.delete(found)


def test_rollout_rolls_back_a_failing_candidate_and_no_data_is_not_a_pass(
    seldon_deployer: Any,  # noqa: F811
    cluster: SimulatedCluster,  # noqa: F811
    model_dirs: dict[str, str],  # noqa: F811
    prometheus: PrometheusDouble,
) -> None:
    """A candidate that fails on half of its inputs (MLServer counts the failures): the first
    step fails its error-rate gate with the numbers, all traffic goes back to the stable Model,
    the candidate Model and the Experiment are deleted; the client saw errors only during that
    step and none after. A Prometheus without data (it scrapes nothing): the step has no
    requests, never a pass, and is rolled back too."""
    name = _name("rollbad")
    prom = {"prometheus_url": prometheus.url}
    svc = seldon_deployer.deploy(_config(model_dirs["a"], name, **prom))
    try:
        client = LoopingClient(svc)
        try:
            with pytest.raises(RolloutFailedError, match="error rate") as ei:
                seldon_deployer.deploy(
                    _config(model_dirs["picky"], name, **prom), policy="canary", rollout=FAST
                )
            rolled_back_at = time.monotonic()
            time.sleep(0.5)
        finally:
            log = client.finish()
        record = ei.value.rollout
        assert record.verdict == "rolled_back" and len(record.steps) == 1
        step = record.steps[0]
        assert step.gates[1].gate == "max_error_rate" and step.gates[1].passed is False
        assert step.candidate.errors > 0 and step.stable.errors == 0
        errors = [t for t, code in log if code != 200]
        assert errors, "the picky candidate failed no request"
        assert all(t <= rolled_back_at for t in errors)
        assert len([t for t, _ in log if t > rolled_back_at]) > 0
        assert _names(cluster, "models", name) == [name]
        assert _names(cluster, "experiments", name) == []
        assert seldon_deployer.find_deployment(name).config.model_uri == model_dirs["a"]

        with PrometheusDouble([], scrape_interval=0.2) as empty:
            quick = {**FAST, "interval": 0.5}
            with pytest.raises(RolloutFailedError, match=r"requests 0 \(>= 5\) FAILED"):
                seldon_deployer.deploy(
                    _config(model_dirs["b"], name, prometheus_url=empty.url),
                    policy="canary",
                    rollout=quick,
                )
        assert _names(cluster, "models", name) == [name]
        assert _names(cluster, "experiments", name) == []
        print(f"failing step: {len(errors)} failed client requests of {len(log)}")
    finally:
        found = seldon_deployer.find_deployment(name)
        if found is not None:
            seldon_deployer.delete(found)


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_stdout_carries_only_the_result(
    seldon_deployer: Any,  # noqa: F811
    model_dirs: dict[str, str],  # noqa: F811
) -> None:
    """The real `zmd` (reading the simulated cluster), ZenML logging at DEBUG: `get-url`
    prints the URL alone and `-o json` parses."""
    from cli_output import assert_machine_readable

    name = _name("stdout")
    svc = seldon_deployer.deploy(_config(model_dirs["a"], name))
    try:
        info = assert_machine_readable(name, svc.prediction_url, ZENML_LOGGING_VERBOSITY="DEBUG")
        assert info["flavor"] == "zmd-seldon" and info["state"] == "running"
    finally:
        seldon_deployer.delete(seldon_deployer.find_deployment(name) or svc)

"""zmd-seldon beyond the conformance suite: the clear errors before or at the first call,
the restored spec after a failed update, logs, and pipelines deploying a model object."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from kube_support import (  # noqa: F401
    api_only,
    cluster,
    model_dirs,
    seldon_deployer,
    seldon_stack,
    sklearn_model,
)
from zenml import step

from zenml_model_deployers.errors import (
    ConfigurationError,
    DeploymentError,
    DeploymentExistsError,
)
from zenml_model_deployers.flavors.seldon.manifests import MODEL
from zenml_model_deployers.flavors.seldon.service import SeldonDeploymentConfig
from zenml_model_deployers.kube.client import KubeTarget
from zenml_model_deployers.kube.resources import KubeNamespace
from zenml_model_deployers.testing.kube_cluster import SimulatedCluster

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


def test_a_name_taken_by_others_is_refused_and_untouched(
    seldon_deployer: Any,  # noqa: F811
    cluster: SimulatedCluster,  # noqa: F811
    model_dirs: dict[str, str],  # noqa: F811
) -> None:
    """A Model of the same name that we do not own: refused; it keeps its spec and exists."""
    name = _name("taken")
    theirs = KubeNamespace(
        KubeTarget(kubeconfig=cluster.kubeconfig, namespace=cluster.namespace), "someone"
    )
    manifest = {
        "apiVersion": "mlops.seldon.io/v1alpha1",
        "kind": "Model",
        "metadata": {"name": name, "labels": {"team": "fraud"}},
        "spec": {"storageUri": "gs://their-bucket/model", "requirements": ["xgboost"]},
    }
    theirs.create(MODEL, manifest)
    with pytest.raises(DeploymentExistsError, match="does not own it"):
        seldon_deployer.deploy(_config(model_dirs["a"], name))
    assert _model_spec(cluster, name) == manifest["spec"]
    assert seldon_deployer.find_deployment(name) is None
    theirs.delete(MODEL, name)


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
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "seldon" / "run.py"
    done = subprocess.run(
        [sys.executable, str(script), "--offline"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    out = done.stdout
    assert "deployed_model_url: http://127.0.0.1:" in out
    assert "same URL, revision 2" in out
    assert "stopped (Model unloaded): inactive" in out
    assert "deleted;" in out


def _share_of_b(svc: Any, n: int) -> tuple[float, list[str]]:
    """Sends n single-row requests through the URL (4 at a time); the share answered by model
    b (which predicts 1), and the failed requests."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import requests

    headers, body = svc.format_request([[0.0, 1.0]])
    local = threading.local()

    def one(_: int) -> int | str:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        r = local.session.post(svc.prediction_url, data=body, headers=headers, timeout=30)
        if r.status_code != 200:
            return f"{r.status_code} {r.text[:100]}"
        return int(svc.parse_response(r.content) == [1])

    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(one, range(n)))
    failures = [a for a in answers if isinstance(a, str)]
    return sum(a for a in answers if isinstance(a, int)) / n, failures


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
        # A progressive rollout needs per-revision metrics, which this flavor does not read
        # yet: refused before anything is made.
        with pytest.raises(ConfigurationError, match="cannot report request metrics"):
            seldon_deployer.deploy(_config(model_dirs["b"], name), policy="canary")
        assert _names(cluster, "experiments", name) == []
        assert _names(cluster, "models", name) == [name]
        svc = seldon_deployer.deploy(_config(model_dirs["b"], name), canary_percent=30)
        exp = [e for e in cluster.objects("experiments") if e["metadata"]["name"] == name]
        assert exp and exp[0]["spec"]["default"] == name
        assert [c["weight"] for c in exp[0]["spec"]["candidates"]] == [70, 30]
        share, failures = _share_of_b(svc, 300)
        assert failures == []
        assert 0.2 <= share <= 0.4, share
        seldon_deployer.rollback(svc)
        assert _names(cluster, "experiments", name) == []
        assert _names(cluster, "models", name) == [name]
        share, failures = _share_of_b(svc, 50)
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
        share, failures = _share_of_b(svc, 50)
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
        svc = seldon_deployer.deploy(
            _config(model_dirs["b"], name, seldon_api="v1"), canary_percent=50
        )
        sdep = [d for d in cluster.objects("seldondeployments") if d["metadata"]["name"] == name]
        assert [(p["name"], p["traffic"]) for p in sdep[0]["spec"]["predictors"]] == [
            ("default", 50),
            ("canary", 50),
        ]
        share, failures = _share_of_b(svc, 100)
        assert failures == [] and 0.3 <= share <= 0.7, share
        svc = seldon_deployer.promote(svc)
        sdep = [d for d in cluster.objects("seldondeployments") if d["metadata"]["name"] == name]
        predictors = sdep[0]["spec"]["predictors"]
        assert [p["name"] for p in predictors] == ["default"]
        assert predictors[0]["graph"]["modelUri"] == model_dirs["b"]
        assert svc.prediction_url == url
        share, failures = _share_of_b(svc, 20)
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

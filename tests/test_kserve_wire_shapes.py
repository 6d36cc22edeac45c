"""What the simulated KServe gateway sends on the wire, raw, for each protocol and runtime the
simulation serves, against the shapes KServe's own servers give (read from kserve/kserve; see
the gateway's module docstring): a user testing their own HTTP client offline parses what
production sends. `service.predict` parses every one of them."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import requests
from kube_support import (  # noqa: F401
    cluster,
    kserve_deployer,
    kserve_stack,
    model_dirs,
)

from zenml_model_deployers.errors import DeploymentError
from zenml_model_deployers.flavors.kserve.config import KServeDeploymentConfig
from zenml_model_deployers.testing.kube_cluster import SimulatedCluster
from zenml_model_deployers.testing.kube_cluster.kserve_gateway import (
    NO_RUNTIME,
    pick_runtime,
    runtime_error,
)

ROWS = [[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]]
V2_BODY = {"inputs": [{"name": "x", "shape": [3, 2], "datatype": "FP64", "data": sum(ROWS, [])}]}


def test_runtime_selection_follows_kserves_runtimes() -> None:
    """Auto-selection as KServe's ServingRuntimes (config/runtimes) give it: format and
    protocol supported, the highest priority wins; an explicit runtime is checked."""
    assert pick_runtime("sklearn", "v1") == "kserve-sklearnserver"
    assert pick_runtime("sklearn", "v2") == "kserve-mlserver"  # priority 2 beats 1
    assert pick_runtime("mlflow", "v2") == "kserve-mlserver"
    assert pick_runtime("xgboost", "v1") == "kserve-xgbserver"
    assert pick_runtime("lightgbm", "v1") == "kserve-lgbserver"
    assert pick_runtime("mlflow", "v1") == ""
    assert runtime_error("mlflow", "v1", "") == NO_RUNTIME
    assert runtime_error("sklearn", "v2", "kserve-sklearnserver") == ""
    assert "protocol version" in runtime_error("sklearn", "v1", "kserve-mlserver")
    assert "framework/version" in runtime_error("sklearn", "v1", "kserve-xgbserver")
    assert runtime_error("sklearn", "v1", "my-own-runtime") == ""


def _post(c: SimulatedCluster, name: str, path: str, body: dict[str, Any]) -> Any:
    host = f"{name}.{c.namespace}.example.com"
    r = requests.post(f"{c.base_url}{path}", json=body, headers={"Host": host}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize(
    ("protocol", "runtime"),
    [("v1", None), ("v2", None), ("v2", "kserve-sklearnserver")],
    ids=["v1-sklearnserver", "v2-mlserver", "v2-sklearnserver"],
)
def test_raw_answers_are_the_runtimes_own(
    kserve_deployer: Any,  # noqa: F811
    cluster: SimulatedCluster,  # noqa: F811
    model_dirs: dict[str, str],  # noqa: F811
    protocol: str,
    runtime: str | None,
) -> None:
    """A classifier (predicts 0 for every row) answers raw HTTP as the runtime KServe runs it
    with: sklearnserver V1 a flat ``{"predictions": [0, 0, 0]}``; sklearnserver V2 one
    ``output-0`` of shape ``[3]`` and a null model version; MLServer (sklearn + V2) its own
    ``predict`` output of shape ``[3, 1]``, named as the InferenceService, no internal version.
    `service.predict` gives ``[0, 0, 0]`` from each."""
    name = f"shape-{uuid.uuid4().hex[:6]}"
    extra = {"runtime": runtime} if runtime else {}
    cfg = KServeDeploymentConfig(
        deployment_name=name, model_name=name, model_uri=model_dirs["a"], protocol=protocol, **extra
    )
    svc = kserve_deployer.deploy(cfg)
    try:
        if protocol == "v1":
            answer = _post(cluster, name, f"/v1/models/{name}:predict", {"instances": ROWS})
            assert answer == {"predictions": [0, 0, 0]}
        elif runtime == "kserve-sklearnserver":
            answer = _post(cluster, name, f"/v2/models/{name}/infer", {**V2_BODY, "id": "r-1"})
            assert answer == {
                "id": "r-1",
                "model_name": name,
                "model_version": None,
                "outputs": [
                    {"name": "output-0", "shape": [3], "datatype": "INT64", "data": [0, 0, 0]}
                ],
            }
        else:
            answer = _post(cluster, name, f"/v2/models/{name}/infer", V2_BODY)
            assert answer["model_name"] == name and "model_version" not in answer, answer
            (out,) = answer["outputs"]
            assert (out["name"], out["shape"], out["datatype"]) == ("predict", [3, 1], "INT64")
            assert out["data"] == [0, 0, 0]
        assert svc.predict(ROWS) == [0, 0, 0]
        assert svc.predict(ROWS[0]) == [0]
    finally:
        kserve_deployer.delete(svc)


def test_mlflow_over_v1_has_no_runtime(
    kserve_deployer: Any,  # noqa: F811
    cluster: SimulatedCluster,  # noqa: F811
    model_dirs: dict[str, str],  # noqa: F811
) -> None:
    """mlflow is served by kserve-mlserver only, which speaks V2: over V1 KServe finds no
    runtime, and says so; nothing is left behind."""
    name = f"shape-{uuid.uuid4().hex[:6]}"
    cfg = KServeDeploymentConfig(
        deployment_name=name, model_name=name, model_uri=model_dirs["a"], model_format="mlflow"
    )
    with pytest.raises(DeploymentError, match=NO_RUNTIME):
        kserve_deployer.deploy(cfg, timeout=30)
    assert not [o for o in cluster.objects("inferenceservices") if o["metadata"]["name"] == name]

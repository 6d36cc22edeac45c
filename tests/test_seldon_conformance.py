"""The conformance suite, run against `zmd-seldon` (Seldon Core 2 `Model`) on the simulated
cluster: the real `kubernetes` client against kmock, every manifest validated against the CRD,
real MLServer answering predictions through the Seldon-Model-routed ingress."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from kube_support import cluster, sklearn_model  # noqa: F401

from zenml_model_deployers.flavors.seldon.service import SeldonDeploymentConfig
from zenml_model_deployers.service import DeploymentService
from zenml_model_deployers.testing.conformance import DeployerConformance
from zenml_model_deployers.testing.kube_cluster import SimulatedCluster

STACK = "zmd-test-seldon"
COMPONENT = "zmd-test-seldon"


def seldon_component(c: SimulatedCluster, **extra: Any) -> dict[str, Any]:
    """The `zmd-seldon` component settings pointing at a simulated cluster."""
    return {
        "kubeconfig": c.kubeconfig,
        "kubernetes_context": c.context,
        "kubernetes_namespace": c.namespace,
        "base_url": c.base_url,
        "default_timeout": 60,
        **extra,
    }


@pytest.fixture(scope="module")
def seldon_stack(cluster: SimulatedCluster) -> Iterator[str]:  # noqa: F811
    """A ZenML stack whose model deployer is `zmd-seldon` on the module's cluster, active for
    the module; the previously active stack comes back afterwards."""
    from zenml.client import Client
    from zenml.enums import StackComponentType

    from zenml_model_deployers.flavors import ensure_deployer_stack

    client = Client()
    previous = client.active_stack_model.name
    settings = seldon_component(cluster)
    ensure_deployer_stack(STACK, COMPONENT, flavor="zmd-seldon", configuration=settings)
    # The component may exist from another module's cluster: point it at this one.
    client.update_stack_component(
        COMPONENT, StackComponentType.MODEL_DEPLOYER, configuration=settings
    )
    yield STACK
    if client.active_stack_model.name != previous:
        client.activate_stack(previous)


@pytest.fixture(scope="module")
def seldon_deployer(seldon_stack: str) -> Any:
    """The active stack's `zmd-seldon` deployer."""
    from zenml_model_deployers.flavors import get_deployer

    return get_deployer("zmd-seldon")


@pytest.fixture(scope="module")
def model_dirs(zenml_env: Path) -> dict[str, str]:
    """Storage folders: a and b (predict 0 and 1), broken (a model.joblib MLServer cannot load)."""
    import joblib

    out = {}
    root = zenml_env / "seldon-models"
    for variant, constant in (("a", 0), ("b", 1)):
        d = root / variant
        d.mkdir(parents=True, exist_ok=True)
        joblib.dump(sklearn_model(constant), d / "model.joblib")
        out[variant] = str(d)
    broken = root / "broken"
    broken.mkdir(parents=True, exist_ok=True)
    (broken / "model.joblib").write_bytes(b"not a pickle: corrupt weights (planted)")
    out["broken"] = str(broken)
    return out


class TestSeldonConformance(DeployerConformance):
    """zmd-seldon passes the suite."""

    sample_input = [[0.0, 1.0]]
    name_prefix = "sd"
    timeout = 60.0
    sim: SimulatedCluster
    dirs: dict[str, str]

    @pytest.fixture(autouse=True)
    def _cluster(self, cluster: SimulatedCluster, model_dirs: dict[str, str]) -> None:  # noqa: F811
        type(self).sim = cluster
        type(self).dirs = model_dirs

    @pytest.fixture
    def deployer(self, seldon_deployer: Any) -> Any:
        return seldon_deployer

    @pytest.fixture
    def stack_with_deployer(self, seldon_stack: str) -> str:
        return seldon_stack

    def make_config(self, variant: str, name: str, **overrides: Any) -> SeldonDeploymentConfig:
        return SeldonDeploymentConfig(
            deployment_name=name, model_name=name, model_uri=self.dirs[variant], **overrides
        )

    def expected(self, variant: str) -> Any:
        return [{"a": 0, "b": 1}[variant]]

    def secret_overrides(self, ref: str) -> dict[str, Any]:
        # storage_secret names the ZenML secret; all its keys go to the Kubernetes Secret.
        return {"storage_secret": ref.strip("{} ").split(".")[0]}

    def assert_secret_delivered(self, service: DeploymentService, value: str) -> None:
        assert self.sim.secrets_seen[service.deployment_name]["token"] == value
        # The value travels only in the Secret's data: never in a Model's plain fields.
        for req in self.sim.log.requests:
            if req["plural"] == "models":
                assert value not in json.dumps(req["body"])

    def assert_nothing_left(self, service: DeploymentService) -> None:
        name = service.deployment_name
        assert [m for m in self.sim.objects("models") if m["metadata"]["name"] == name] == []
        assert [s for s in self.sim.objects("secrets") if name in s["metadata"]["name"]] == []

    def assert_url_gone(self, service: DeploymentService, url: str) -> None:
        # The mesh stays; it no longer knows the model.
        headers, body = service.format_request(self.sample_input)
        r = requests.post(url, data=body, headers=headers, timeout=5)
        assert r.status_code == 404, r.text

    def backend_writes(self) -> int:
        # What the flavor (not the controller) asked the API server to change.
        return sum(
            1
            for r in self.sim.log.requests
            if not r["by_controller"] and r["verb"] not in ("get", "list", "watch")
        )

    def test_11_every_manifest_was_valid(self) -> None:
        """No manifest the flavor sent was refused by the CRD schemas during the suite."""
        assert self.sim.log.rejected == []
        sent = [r for r in self.sim.log.requests if r["plural"] == "models" and r["body"]]
        assert any(r["verb"] == "create" for r in sent) and any(r["verb"] == "patch" for r in sent)

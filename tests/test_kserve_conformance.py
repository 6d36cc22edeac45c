"""The conformance suite, run against `zmd-kserve` on the simulated cluster: the real
`kubernetes` client against kmock, every manifest and patch result validated against KServe's
InferenceService CRD, a KServe-like controller (generations, revisions, conditions), and real
MLServer answering through the gateway by the InferenceService's host."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import pytest
import requests
from kube_support import (  # noqa: F401
    cluster,
    kserve_deployer,
    kserve_stack,
    model_dirs,
)

from zenml_model_deployers.flavors.kserve.service import KServeDeploymentConfig
from zenml_model_deployers.service import DeploymentService
from zenml_model_deployers.testing.conformance import DeployerConformance
from zenml_model_deployers.testing.kube_cluster import SimulatedCluster


class TestKServeConformance(DeployerConformance):
    """zmd-kserve (Serverless, protocol V1) passes the suite. Standard mode and V2 are covered
    by test_kserve_lifecycle.py (one suite run costs ~70 s: not repeated per mode)."""

    sample_input = [[0.0, 1.0]]
    name_prefix = "ks"
    timeout = 60.0
    overrides: ClassVar[dict[str, Any]] = {}
    sim: SimulatedCluster
    dirs: dict[str, str]

    @pytest.fixture(autouse=True)
    def _cluster(self, cluster: SimulatedCluster, model_dirs: dict[str, str]) -> None:  # noqa: F811
        type(self).sim = cluster
        type(self).dirs = model_dirs

    @pytest.fixture
    def deployer(self, kserve_deployer: Any) -> Any:  # noqa: F811
        return kserve_deployer

    @pytest.fixture
    def stack_with_deployer(self, kserve_stack: str) -> str:  # noqa: F811
        return kserve_stack

    def make_config(self, variant: str, name: str, **overrides: Any) -> KServeDeploymentConfig:
        return KServeDeploymentConfig(
            deployment_name=name,
            model_name=name,
            model_uri=self.dirs[variant],
            **{**self.overrides, **overrides},
        )

    def expected(self, variant: str) -> Any:
        return [{"a": 0, "b": 1}[variant]]

    def secret_overrides(self, ref: str) -> dict[str, Any]:
        return {"storage_secret": ref.strip("{} ").split(".")[0]}

    def assert_secret_delivered(self, service: DeploymentService, value: str) -> None:
        assert self.sim.secrets_seen[service.deployment_name]["token"] == value
        for req in self.sim.log.requests:
            if req["plural"] in ("inferenceservices", "serviceaccounts"):
                assert value not in json.dumps(req["body"])

    def assert_nothing_left(self, service: DeploymentService) -> None:
        name = service.deployment_name
        for plural in ("inferenceservices", "secrets", "serviceaccounts"):
            left = [o for o in self.sim.objects(plural) if name in o["metadata"]["name"]]
            assert left == [], plural

    def assert_url_gone(self, service: DeploymentService, url: str) -> None:
        # The gateway stays; it no longer knows the host.
        headers, body = service.format_request(self.sample_input)
        r = requests.post(url, data=body, headers=headers, timeout=5)
        assert r.status_code == 404, r.text

    def backend_writes(self) -> int:
        return sum(
            1
            for r in self.sim.log.requests
            if not r["by_controller"] and r["verb"] not in ("get", "list", "watch")
        )

    def test_11_every_manifest_was_valid(self) -> None:
        """No manifest or patch the flavor sent was refused by the CRD schema."""
        assert self.sim.log.rejected == []
        sent = [r for r in self.sim.log.requests if r["plural"] == "inferenceservices"]
        assert any(r["verb"] == "create" and r["body"] for r in sent)
        assert any(r["verb"] == "patch" and r["body"] for r in sent)

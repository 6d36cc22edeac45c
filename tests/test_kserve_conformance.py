"""The conformance suite, run against `zmd-kserve` on the simulated cluster: the real
`kubernetes` client against kmock, every manifest and patch result validated against KServe's
InferenceService CRD, a KServe-like controller (generations, revisions, conditions), and real
MLServer answering through the gateway by the InferenceService's host."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kube_support import (  # noqa: F401
    ClusterConformance,
    cluster,
    kserve_deployer,
    kserve_stack,
    model_dirs,
)

from zenml_model_deployers.flavors.kserve.backend import INFERENCE_SERVICE
from zenml_model_deployers.flavors.kserve.config import KServeDeploymentConfig
from zenml_model_deployers.kube.objects import ResourceKind
from zenml_model_deployers.service import DeploymentService


class TestKServeConformance(ClusterConformance):
    """zmd-kserve (Serverless, protocol V1) passes the suite. Standard mode and V2 are covered
    by test_kserve_lifecycle.py (one suite run costs ~70 s: not repeated per mode)."""

    CONFIG_CLASS = KServeDeploymentConfig
    name_prefix = "ks"

    @pytest.fixture
    def deployer(self, kserve_deployer: Any) -> Any:  # noqa: F811
        return kserve_deployer

    @pytest.fixture
    def stack_with_deployer(self, kserve_stack: str) -> str:  # noqa: F811
        return kserve_stack

    def foreign_manifest(self, name: str) -> tuple[ResourceKind, dict[str, Any]]:
        return INFERENCE_SERVICE, {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "metadata": {"name": name, "labels": {"team": "fraud"}},
            "spec": {
                "predictor": {
                    "model": {"modelFormat": {"name": "sklearn"}, "storageUri": self.dirs["b"]}
                }
            },
        }

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

    def test_11_every_manifest_was_valid(self) -> None:
        """No manifest or patch the flavor sent was refused by the CRD schema."""
        assert self.sim.log.rejected == []
        sent = [r for r in self.sim.log.requests if r["plural"] == "inferenceservices"]
        assert any(r["verb"] == "create" and r["body"] for r in sent)
        assert any(r["verb"] == "patch" and r["body"] for r in sent)

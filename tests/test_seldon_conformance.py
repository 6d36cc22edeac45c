"""The conformance suite, run against `zmd-seldon` (Seldon Core 2 `Model`) on the simulated
cluster: the real `kubernetes` client against kmock, every manifest validated against the CRD,
real MLServer answering predictions through the Seldon-Model-routed ingress."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import pytest
from kube_support import (  # noqa: F401
    ClusterConformance,
    cluster,
    model_dirs,
    seldon_deployer,
    seldon_stack,
)

from zenml_model_deployers.flavors.seldon.backend import (
    MODEL,
    SELDON_DEPLOYMENT,
    seldon_deployment_spec,
)
from zenml_model_deployers.flavors.seldon.config import SeldonDeploymentConfig
from zenml_model_deployers.kube.objects import ResourceKind
from zenml_model_deployers.service import DeploymentService


class TestSeldonConformance(ClusterConformance):
    """zmd-seldon passes the suite."""

    CONFIG_CLASS = SeldonDeploymentConfig
    # The mesh stays; it no longer knows the model.
    URL_GONE_STATUSES = (404, 503)
    name_prefix = "sd"
    plural = "models"

    @pytest.fixture
    def deployer(self, seldon_deployer: Any) -> Any:  # noqa: F811
        return seldon_deployer

    @pytest.fixture
    def stack_with_deployer(self, seldon_stack: str) -> str:  # noqa: F811
        return seldon_stack

    def foreign_manifest(self, name: str) -> tuple[ResourceKind, dict[str, Any]]:
        return MODEL, {
            "apiVersion": "mlops.seldon.io/v1alpha1",
            "kind": "Model",
            "metadata": {"name": name, "labels": {"team": "fraud"}},
            "spec": {"storageUri": self.dirs["b"], "requirements": ["sklearn"]},
        }

    def assert_secret_delivered(self, service: DeploymentService, value: str) -> None:
        assert self.sim.secrets_seen[service.deployment_name]["token"] == value
        # The value travels only in the Secret's data: never in a Model's plain fields.
        for req in self.sim.log.requests:
            if req["plural"] == self.plural:
                assert value not in json.dumps(req["body"])

    def assert_nothing_left(self, service: DeploymentService) -> None:
        name = service.deployment_name
        for plural in ("models", "experiments", "seldondeployments"):
            left = [m for m in self.sim.objects(plural) if name in m["metadata"]["name"]]
            assert left == [], plural
        assert [s for s in self.sim.objects("secrets") if name in s["metadata"]["name"]] == []

    def test_11_every_manifest_was_valid(self) -> None:
        """No manifest the flavor sent was refused by the CRD schemas during the suite."""
        assert self.sim.log.rejected == []
        sent = [r for r in self.sim.log.requests if r["plural"] == self.plural and r["body"]]
        assert any(r["verb"] == "create" for r in sent) and any(r["verb"] == "patch" for r in sent)


class TestSeldonCore1Conformance(TestSeldonConformance):
    """zmd-seldon with seldon_api="v1" (a Core 1 SeldonDeployment with the prepackaged
    SKLEARN_SERVER, Seldon protocol) passes the suite too."""

    name_prefix = "sd1"
    plural = "seldondeployments"
    overrides: ClassVar[dict[str, Any]] = {"seldon_api": "v1"}

    def foreign_manifest(self, name: str) -> tuple[ResourceKind, dict[str, Any]]:
        theirs = self.make_config("b", name)
        assert isinstance(theirs, SeldonDeploymentConfig)
        return SELDON_DEPLOYMENT, {
            "apiVersion": "machinelearning.seldon.io/v1",
            "kind": "SeldonDeployment",
            "metadata": {"name": name, "labels": {"team": "fraud"}},
            "spec": seldon_deployment_spec(name, theirs, None, 0),
        }

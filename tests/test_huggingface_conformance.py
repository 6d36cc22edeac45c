"""The conformance suite, run against `zmd-huggingface` with the offline Inference Endpoints
double driven through the real `huggingface_hub` client."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hf_support import hf_deployer, hf_double, hf_stack  # noqa: F401

from zenml_model_deployers.flavors.huggingface.config import (
    HuggingFaceDeploymentConfig,
    endpoint_name_for,
)
from zenml_model_deployers.service import DeploymentService
from zenml_model_deployers.testing.conformance import DeployerConformance
from zenml_model_deployers.testing.hf_double import HFEndpointsDouble, fake_prediction

REPOSITORY = "zmd-test/sentiment"
TASK = "text-classification"


class TestHuggingFaceConformance(DeployerConformance):
    """zmd-huggingface passes the suite."""

    sample_input = "zenml makes deployments boring"
    name_prefix = "hf"
    timeout = 20.0
    double: HFEndpointsDouble

    @pytest.fixture(autouse=True)
    def _double(self, hf_double: HFEndpointsDouble) -> None:  # noqa: F811
        type(self).double = hf_double

    @pytest.fixture
    def deployer(self, hf_deployer: Any) -> Any:  # noqa: F811
        return hf_deployer

    @pytest.fixture
    def stack_with_deployer(self, hf_stack: str) -> str:  # noqa: F811
        return hf_stack

    def make_config(self, variant: str, name: str, **overrides: Any) -> HuggingFaceDeploymentConfig:
        repository = "zmd-test/fail-to-load" if variant == "broken" else REPOSITORY
        return HuggingFaceDeploymentConfig(
            deployment_name=name,
            model_name=name,
            model_uri=repository,
            revision=f"rev-{variant}",
            task=TASK,
            **overrides,
        )

    def expected(self, variant: str) -> Any:
        return fake_prediction(TASK, REPOSITORY, f"rev-{variant}", self.sample_input)[0]

    def assert_nothing_left(self, service: DeploymentService) -> None:
        assert self.double.endpoint(endpoint_name_for(service.deployment_name)) is None

    def leftovers(self, deployer: Any, name: str) -> list[str]:
        # Its endpoint (the secrets live in it), unless it is the one someone else made.
        ep = self.double.endpoint(endpoint_name_for(name))
        if ep is None or ep.payload.get("tags") == ["someone-else"]:
            return []
        return [f"endpoint/{ep.name}"]

    def occupy_name(self, name: str) -> tuple[dict[str, Any], Callable[[], None]]:
        ns, ep = self.double.namespace, endpoint_name_for(name)
        body = {
            "name": ep,
            "type": "private",
            "model": {"repository": REPOSITORY, "framework": "pytorch", "task": TASK},
            "tags": ["someone-else"],
        }
        status, answer = self.double.api("POST", f"/v2/endpoint/{ns}", body)
        assert status == 200, answer

        def release() -> None:
            record = self.double.endpoint(ep)
            assert record is not None and record.payload.get("tags") == ["someone-else"]
            self.double.api("DELETE", f"/v2/endpoint/{ns}/{ep}", None)

        return {}, release

    def assert_secret_delivered(self, service: DeploymentService, value: str) -> None:
        record = self.double.endpoint(endpoint_name_for(service.deployment_name))
        assert record is not None
        assert record.secrets["ZMD_CONFORMANCE_TOKEN"] == value

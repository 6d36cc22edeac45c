"""The conformance suite, run against `zmd-bentoml` with real BentoML 1.4 servers on 127.0.0.1."""

from __future__ import annotations

from typing import Any

import pytest

from zenml_model_deployers.flavors.bentoml.config import BentoMLDeploymentConfig
from zenml_model_deployers.testing.conformance import LocalProcessConformance


class TestBentoMLConformance(LocalProcessConformance):
    """zmd-bentoml passes the suite."""

    sample_input = [[0.5, 0.5], [0.1, 0.9]]
    name_prefix = "bento"

    @pytest.fixture(autouse=True)
    def _bentos(self, bentos: dict[str, str]) -> None:
        type(self).tags = bentos  # type: ignore[attr-defined]

    @pytest.fixture
    def deployer(self, bentoml_deployer: Any) -> Any:
        return bentoml_deployer

    @pytest.fixture
    def stack_with_deployer(self, bentoml_stack: str) -> str:
        return bentoml_stack

    def make_config(self, variant: str, name: str, **overrides: Any) -> BentoMLDeploymentConfig:
        return BentoMLDeploymentConfig(
            deployment_name=name,
            model_name=name,
            model_uri=self.tags[variant],  # type: ignore[attr-defined]
            **overrides,
        )

    def expected(self, variant: str) -> Any:
        return [0, 0] if variant == "a" else [1, 1]

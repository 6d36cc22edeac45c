"""The conformance suite, run against `zmd-mlflow` with real MLflow servers on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from zenml_model_deployers.flavors.mlflow.config import MLflowDeploymentConfig
from zenml_model_deployers.testing.conformance import LocalProcessConformance


class TestMLflowConformance(LocalProcessConformance):
    """zmd-mlflow passes the suite."""

    sample_input = [[0.5, 0.5], [0.1, 0.9]]
    name_prefix = "mlf"

    @pytest.fixture(autouse=True)
    def _models(self, models_dir: Path) -> None:
        type(self).models = models_dir  # type: ignore[attr-defined]

    @pytest.fixture
    def deployer(self, mlflow_deployer: Any) -> Any:
        return mlflow_deployer

    @pytest.fixture
    def stack_with_deployer(self, mlflow_stack: str) -> str:
        return mlflow_stack

    def make_config(self, variant: str, name: str, **overrides: Any) -> MLflowDeploymentConfig:
        return MLflowDeploymentConfig(
            deployment_name=name,
            model_name=name,
            model_uri=str(self.models / variant),  # type: ignore[attr-defined]
            **overrides,
        )

    def expected(self, variant: str) -> Any:
        return [0, 0] if variant == "a" else [1, 1]

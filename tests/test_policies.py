"""Deploy policies for an existing deployment with another config: fail, side_by_side, replace."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from zenml_model_deployers.errors import DeploymentExistsError
from zenml_model_deployers.flavors.mlflow.config import MLflowDeploymentConfig


def test_fail_side_by_side_and_replace(mlflow_deployer: Any, models_dir: Path) -> None:
    def cfg(variant: str) -> MLflowDeploymentConfig:
        return MLflowDeploymentConfig(deployment_name="pol", model_uri=str(models_dir / variant))

    first = mlflow_deployer.deploy(cfg("a"), timeout=120)
    twin = None
    try:
        # fail: typed error, nothing changes.
        with pytest.raises(DeploymentExistsError, match="policy is 'fail'"):
            mlflow_deployer.deploy(cfg("b"), policy="fail", timeout=120)
        same = mlflow_deployer.find_deployment("pol")
        assert same.status.config_hash == first.status.config_hash
        assert same.status.server.pid == first.status.server.pid

        # side_by_side: a second deployment under a derived name; the first is untouched.
        twin = mlflow_deployer.deploy(cfg("b"), policy="side_by_side", timeout=120)
        assert twin.deployment_name == f"pol-{cfg('b').config_hash()[:8]}"
        assert twin.prediction_url != first.prediction_url
        assert twin.predict([[1.0, 1.0]]) == [1]
        assert mlflow_deployer.find_deployment("pol").predict([[1.0, 1.0]]) == [0]
        again = mlflow_deployer.deploy(cfg("b"), policy="side_by_side", timeout=120)
        assert again.uuid == twin.uuid  # idempotent: no third deployment

        # replace: delete then create, on the same URL.
        replaced = mlflow_deployer.deploy(cfg("b"), policy="replace", timeout=120)
        assert replaced.uuid != first.uuid
        assert replaced.prediction_url == first.prediction_url
        assert replaced.predict([[1.0, 1.0]]) == [1]
        assert not first.status.server.is_alive()
    finally:
        for name in ("pol", twin.deployment_name if twin else None):
            svc = mlflow_deployer.find_deployment(name) if name else None
            if svc is not None:
                mlflow_deployer.delete(svc)

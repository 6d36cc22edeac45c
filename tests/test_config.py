"""Invalid configuration is refused before anything starts; the hash ignores provenance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from zenml_model_deployers.errors import ConfigurationError
from zenml_model_deployers.flavors.mlflow.config import MLflowDeploymentConfig


def test_bad_deployment_name_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError) as err:
        MLflowDeploymentConfig(deployment_name="My Model_v2", model_uri="/x")
    assert "DNS-safe" in str(err.value) and "'my-model-v2'" in str(err.value)


def test_name_is_derived_from_model_name() -> None:
    cfg = MLflowDeploymentConfig(model_name="Iris Classifier_v2", model_uri="/x")
    assert cfg.deployment_name == "iris-classifier-v2"


def test_port_out_of_range() -> None:
    with pytest.raises(ValueError):
        MLflowDeploymentConfig(deployment_name="m", model_uri="/x", port=70000)


def test_hash_ignores_provenance_but_not_serving_settings() -> None:
    a = MLflowDeploymentConfig(
        deployment_name="m", model_uri="/x", pipeline_name="p1", run_name="r1"
    )
    b = MLflowDeploymentConfig(
        deployment_name="m", model_uri="/x", pipeline_name="p2", run_name="r2"
    )
    c = MLflowDeploymentConfig(deployment_name="m", model_uri="/y")
    d = MLflowDeploymentConfig(deployment_name="m", model_uri="/x", workers=2)
    assert a.config_hash() == b.config_hash()
    assert len({a.config_hash(), c.config_hash(), d.config_hash()}) == 3


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"timeout": -1}, "timeout"),
        ({"timeout": 0}, "timeout"),
        ({"policy": "yolo"}, "unknown policy 'yolo'"),
    ],
)
def test_invalid_deploy_options_fail_before_anything_starts(
    mlflow_deployer: Any, models_dir: Path, kwargs: dict[str, Any], needle: str
) -> None:
    from zenml.client import Client

    before = Client().list_services(size=1000).total
    cfg = MLflowDeploymentConfig(deployment_name="never-started", model_uri=str(models_dir / "a"))
    with pytest.raises(ConfigurationError) as err:
        mlflow_deployer.deploy(cfg, **kwargs)
    assert needle in str(err.value)
    assert Client().list_services(size=1000).total == before
    assert not (mlflow_deployer.find_deployment("never-started"))


def test_build_config_refuses_both_model_and_uri(mlflow_deployer: Any) -> None:
    with pytest.raises(ConfigurationError, match="exactly one"):
        mlflow_deployer.build_config(model=object(), model_uri="/x", deployment_name="m")
    with pytest.raises(ConfigurationError, match="DNS-safe"):
        mlflow_deployer.build_config(model_uri="/x", deployment_name="Bad Name")


def test_unsupported_model_object_says_what_to_do(mlflow_deployer: Any) -> None:
    with pytest.raises(ConfigurationError, match="model_uri"):
        mlflow_deployer.build_config(model=object(), deployment_name="m")

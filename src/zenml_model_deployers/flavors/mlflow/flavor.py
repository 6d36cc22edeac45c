"""The `zmd-mlflow` flavor: cheap to import (no mlflow import here)."""

from __future__ import annotations

from typing import ClassVar

from zenml_model_deployers.deployer import BaseDeployerConfig, BaseDeployerFlavor

FLAVOR_NAME = "zmd-mlflow"


class MLflowDeployerConfig(BaseDeployerConfig):
    """Settings of a `zmd-mlflow` model deployer component.

    Attributes:
        default_timeout: seconds a deploy waits for the server to be ready.
    """


class MLflowDeployerFlavor(BaseDeployerFlavor):
    """Serves MLflow models with MLflow's scoring server (what `mlflow models serve` runs), one local
    process per revision, behind a stable URL."""

    FLAVOR_NAME: ClassVar[str] = FLAVOR_NAME
    DISPLAY_NAME: ClassVar[str] = "MLflow (zenml-model-deployers)"
    LOGO: ClassVar[str] = "mlflow"
    CONFIG_CLASS: ClassVar[type[BaseDeployerConfig]] = MLflowDeployerConfig
    IMPLEMENTATION: ClassVar[str] = "zenml_model_deployers.flavors.mlflow.deployer.MLflowDeployer"

"""The `zmd-mlflow` flavor: cheap to import (no mlflow import here)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from zenml_model_deployers.deployer import BaseDeployerConfig, BaseDeployerFlavor

if TYPE_CHECKING:
    from zenml_model_deployers.flavors.mlflow.deployer import MLflowDeployer

FLAVOR_NAME = "zmd-mlflow"


class MLflowDeployerConfig(BaseDeployerConfig):
    """Settings of a `zmd-mlflow` model deployer component.

    Attributes:
        default_timeout: seconds a deploy waits for the server to be ready.
    """


class MLflowDeployerFlavor(BaseDeployerFlavor):
    """Serves MLflow models with local `mlflow models serve` processes behind a stable URL."""

    @property
    def name(self) -> str:
        """Flavor name."""
        return FLAVOR_NAME

    @property
    def display_name(self) -> str:
        """Shown in the dashboard."""
        return "MLflow (zenml-model-deployers)"

    @property
    def docs_url(self) -> str | None:
        """Docs."""
        return None

    @property
    def sdk_docs_url(self) -> str | None:
        """SDK docs."""
        return None

    @property
    def config_class(self) -> type[MLflowDeployerConfig]:
        """Config class."""
        return MLflowDeployerConfig

    @property
    def implementation_class(self) -> type[MLflowDeployer]:
        """Implementation class (imported lazily)."""
        from zenml_model_deployers.flavors.mlflow.deployer import MLflowDeployer

        return MLflowDeployer

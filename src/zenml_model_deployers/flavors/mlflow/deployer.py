"""The `zmd-mlflow` model deployer."""

from __future__ import annotations

from typing import Any, ClassVar

from zenml.model_deployers.base_model_deployer import BaseModelDeployerFlavor

from zenml_model_deployers.deployer import BaseDeployer
from zenml_model_deployers.flavors.mlflow.flavor import MLflowDeployerFlavor
from zenml_model_deployers.flavors.mlflow.service import MLflowDeploymentService


class MLflowDeployer(BaseDeployer):
    """Deploys MLflow models locally, each behind a stable URL that survives updates."""

    NAME: ClassVar[str] = "MLflow (zmd)"
    FLAVOR: ClassVar[type[BaseModelDeployerFlavor]] = MLflowDeployerFlavor
    SERVICE_CLASS: ClassVar[type[MLflowDeploymentService]] = MLflowDeploymentService

    def package_model(self, model: Any, name: str, input_example: Any = None) -> str:
        """Saves the model object as a content-addressed MLflow model directory.

        Args:
            model: a model object (docs/models.md).
            name: the deployment name.
            input_example: optional example input.

        Returns:
            The model directory's path.
        """
        from zenml_model_deployers.flavors.mlflow.packaging import save_mlflow_model

        return save_mlflow_model(model, name, input_example)

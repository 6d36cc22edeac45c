"""Reusable pipeline steps of zenml-model-deployers."""

from zenml_model_deployers.steps.deploy import (
    mlflow_deployer_step,
    model_deployer_step,
    recreate_deployment_step,
)

__all__ = ["mlflow_deployer_step", "model_deployer_step", "recreate_deployment_step"]

"""Reusable pipeline steps of zenml-model-deployers."""

from zenml_model_deployers.steps.deploy import (
    huggingface_deployer_step,
    mlflow_deployer_step,
    model_deployer_step,
    recreate_deployment_step,
)
from zenml_model_deployers.steps.predict import batch_inference_step, prediction_step

__all__ = [
    "batch_inference_step",
    "huggingface_deployer_step",
    "mlflow_deployer_step",
    "model_deployer_step",
    "prediction_step",
    "recreate_deployment_step",
]

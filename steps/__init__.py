"""Reusable pipeline steps of zenml-model-deployers.

Steps of a backend with a heavy client (BentoML) load on first use, so importing this package
stays fast.
"""

from typing import Any

from zenml_model_deployers.steps.deploy import (
    huggingface_deployer_step,
    mlflow_deployer_step,
    model_deployer_step,
    recreate_deployment_step,
)
from zenml_model_deployers.steps.kserve import kserve_deployer_step
from zenml_model_deployers.steps.predict import batch_inference_step, prediction_step
from zenml_model_deployers.steps.seldon import seldon_deployer_step
from zenml_model_deployers.steps.vllm import vllm_deployer_step

_LAZY = {
    "bento_builder_step": "zenml_model_deployers.steps.bento",
    "bentoml_deployer_step": "zenml_model_deployers.steps.bento",
    "databricks_deployer_step": "zenml_model_deployers.steps.databricks",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "batch_inference_step",
    "bento_builder_step",
    "bentoml_deployer_step",
    "databricks_deployer_step",
    "huggingface_deployer_step",
    "kserve_deployer_step",
    "mlflow_deployer_step",
    "model_deployer_step",
    "prediction_step",
    "recreate_deployment_step",
    "seldon_deployer_step",
    "vllm_deployer_step",
]

"""The deployment config of `zmd-mlflow`: what to serve and how (re-exported from service.py,
where ZenML recorded its source path)."""

from __future__ import annotations

from typing import ClassVar

from zenml_model_deployers.local.config import DirectDataPathConfig


class MLflowDeploymentConfig(DirectDataPathConfig):
    """How to serve an MLflow model.

    Attributes:
        model_uri: any MLflow model URI: `runs:/...`, `models:/...`, or a local path.
        workers: uvicorn workers of the server.
        timeout_per_request: the server's request timeout in seconds.
        data_path: ``"auto"`` (default), ``"relay"`` or ``"direct"``: see
            ``local.config.DirectDataPathConfig``.
    """

    FORMER_SOURCES: ClassVar[tuple[str, ...]] = (
        "zenml_model_deployers.flavors.mlflow.service.MLflowDeploymentConfig",
    )

    workers: int = 1
    timeout_per_request: int = 60

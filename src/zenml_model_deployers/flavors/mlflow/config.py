"""The deployment config of `zmd-mlflow`: what to serve and how (re-exported from service.py,
where ZenML recorded its source path)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from zenml_model_deployers.errors import ConfigurationError
from zenml_model_deployers.local.service import LocalDeploymentConfig


class MLflowDeploymentConfig(LocalDeploymentConfig):
    """How to serve an MLflow model.

    Attributes:
        model_uri: any MLflow model URI: `runs:/...`, `models:/...`, or a local path.
        workers: uvicorn workers of the server.
        timeout_per_request: the server's request timeout in seconds.
        data_path: ``"auto"`` (default): the direct data path wherever it is eligible (no
            ``api_key``, a loopback ``host``), with the front stepping into the data path by
            itself for a canary or progressive rollout and out again once it ends; the relay
            otherwise. ``"relay"``: every request always passes through the deployment's front
            (API key, the relay's request limits, canaries and progressive rollouts, replay
            during an update). ``"direct"``: the serving revision's uvicorn accepts on the
            front's listening socket itself and the front stands in the data path only while
            a revision is switched: the server's full throughput and latency, but no API key
            and no canary or rollout (both refused). Per-request metrics, updates, self-heal,
            stop and start keep the URL and lose no request on every path.
    """

    FORMER_SOURCES: ClassVar[tuple[str, ...]] = (
        "zenml_model_deployers.flavors.mlflow.service.MLflowDeploymentConfig",
    )

    workers: int = 1
    timeout_per_request: int = 60
    data_path: Literal["auto", "relay", "direct"] = "auto"

    def __init__(self, **data: Any) -> None:
        """Refuses the direct data path with an API key (the front checks keys, and requests
        bypass it there).

        Args:
            **data: fields.
        """
        super().__init__(**data)
        if self.data_path == "direct" and self.api_key:
            raise ConfigurationError(
                f"Deployment '{self.deployment_name}' asks for data_path='direct' and an "
                "api_key: on the direct data path requests reach the model server without "
                "passing the front, which is what checks the key.",
                deployment_name=self.deployment_name,
                hint="drop data_path='direct' (the default 'auto' keeps the relay in the data path "
                "when there is a key, and the relay checks it), or the key.",
            )

"""The deployment config of `zmd-seldon`: which model a Seldon ``Model`` (Core 2) or
``SeldonDeployment`` (Core 1) serves, and how.

Cheap to import (no kubernetes): ZenML loads it to read stored services.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, ValidationInfo, field_validator

from zenml_model_deployers.flavors.seldon.flavor import SELDON_APIS
from zenml_model_deployers.kube.config import KubeDeploymentConfig, check_choice

# Seldon Core 1's prepackaged model servers.
PREPACKAGED_SERVERS = (
    "SKLEARN_SERVER",
    "MLFLOW_SERVER",
    "XGBOOST_SERVER",
    "TENSORFLOW_SERVER",
    "TRITON_SERVER",
)
# Seldon Core 1's request protocols.
PROTOCOLS = ("seldon", "v2")


class SeldonDeploymentConfig(KubeDeploymentConfig):
    """How to serve a model on Seldon.

    Attributes:
        model_uri: the model's storage URI (``gs://``, ``s3://``, a path the servers read):
            a folder in the layout of the runtime (e.g. ``model.joblib`` for sklearn).
        seldon_api: ``v2`` (Core 2 ``Model``) or ``v1`` (Core 1 ``SeldonDeployment``).
        requirements: Core 2: capabilities a server needs to load it (e.g. ``sklearn``).
        replicas: replicas of the model.
        memory: memory the model needs (e.g. ``100Ki``), for scheduling.
        server: the Core 2 ``Server`` to load it on (None: Seldon picks by requirements).
        parameters: Core 2 model parameters (name -> value).
        storage_secret: a ZenML secret's name: its keys become the Kubernetes Secret the server
            reads storage with (never the values in this config).
        implementation: Core 1: the prepackaged server (SKLEARN_SERVER, MLFLOW_SERVER,
            XGBOOST_SERVER, TENSORFLOW_SERVER, TRITON_SERVER), unless ``image`` is set.
        image: Core 1: a custom model server image instead of a prepackaged server.
        protocol: Core 1: ``seldon`` (``/api/v1.0/predictions``) or ``v2`` (Open Inference).
        namespace: the Kubernetes namespace (default: the component's).
        kubernetes_context: kubeconfig context (default: the component's).
        kubeconfig: kubeconfig path (default: the component's).
        in_cluster: use the pod's service account.
        connector_id: a ZenML Kubernetes service connector (set from the component).
        base_url: the Seldon inference endpoint (default: the component's).
        prometheus_url: a Prometheus scraping the model servers (default: the component's).
        prometheus_token: its bearer token, a ZenML secret reference (default: the
            component's).
    """

    # Defined in service.py until issue 24 (it still imports from there).
    FORMER_SOURCES: ClassVar[tuple[str, ...]] = (
        "zenml_model_deployers.flavors.seldon.service.SeldonDeploymentConfig",
    )

    health_path: str = "/v2/health/ready"
    seldon_api: str = "v2"
    requirements: list[str] = Field(default_factory=lambda: ["sklearn"])
    replicas: int = Field(default=1, ge=1)
    memory: str | None = None
    server: str | None = None
    parameters: dict[str, str] = Field(default_factory=dict)
    implementation: str = "SKLEARN_SERVER"
    image: str | None = None
    protocol: str = "seldon"

    @field_validator("seldon_api", "protocol")
    @classmethod
    def _one_of(cls, v: str, info: ValidationInfo) -> str:
        choices = {"seldon_api": SELDON_APIS, "protocol": PROTOCOLS}
        return check_choice(str(info.field_name), v, choices[str(info.field_name)])

    @field_validator("implementation")
    @classmethod
    def _known_server(cls, v: str) -> str:
        if v not in PREPACKAGED_SERVERS:
            raise ValueError(
                f"implementation {v!r} is not a Seldon Core 1 prepackaged server: use one of "
                f"{', '.join(PREPACKAGED_SERVERS)}, or set `image` for a custom one."
            )
        return v


__all__ = ["PREPACKAGED_SERVERS", "PROTOCOLS", "SeldonDeploymentConfig"]

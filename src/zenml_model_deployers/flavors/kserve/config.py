"""The deployment config of `zmd-kserve`: which model an ``InferenceService`` serves, and how.

ZenML imports it to read stored services: it imports no kubernetes.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, field_validator

from zenml_model_deployers.flavors.kserve.flavor import check_mode
from zenml_model_deployers.kube.config import KubeDeploymentConfig, check_choice

# The model formats KServe serves out of the box (its ServingRuntimes' `modelFormat`s).
MODEL_FORMATS = (
    "sklearn",
    "mlflow",
    "xgboost",
    "lightgbm",
    "tensorflow",
    "pytorch",
    "onnx",
    "huggingface",
)
PROTOCOLS = ("v1", "v2")


class KServeDeploymentConfig(KubeDeploymentConfig):
    """How to serve a model on KServe.

    Attributes:
        model_uri: the model's storage URI (``gs://``, ``s3://``, ``pvc://``, a path the
            cluster reads), or for ``huggingface`` a Hub id (``org/name``).
        model_format: the ``modelFormat`` KServe picks a serving runtime by.
        runtime: a ``ServingRuntime`` to use (None: KServe picks one for the format).
        protocol: ``v1`` (``/v1/models/{name}:predict``) or ``v2`` (Open Inference Protocol).
        min_replicas: the predictor's minimum replicas (0 lets Serverless scale to zero).
        max_replicas: its maximum replicas (None: KServe's default).
        resources: the model container's ``requests``/``limits`` (e.g.
            ``{"limits": {"cpu": "1", "memory": "2Gi"}}``).
        args: extra arguments of the model server (e.g. vLLM's ``--max-model-len=2048``).
        storage_secret: a ZenML secret's name: its keys become the Kubernetes Secret (carried
            by a ServiceAccount) the storage initializer reads the model with.
        deployment_mode: ``Serverless``/``Standard``/``RawDeployment``, or None (the cluster's
            default); KServe cannot move an InferenceService between modes in place.
        namespace: the Kubernetes namespace (default: the component's).
        kubernetes_context: kubeconfig context (default: the component's).
        kubeconfig: kubeconfig path (default: the component's).
        in_cluster: use the pod's service account.
        connector_id: a ZenML Kubernetes service connector (set from the component).
        base_url: the ingress gateway (default: the component's; empty: ``status.url``).
    """

    # Defined in service.py until issue 24 (it still imports from there).
    FORMER_SOURCES: ClassVar[tuple[str, ...]] = (
        "zenml_model_deployers.flavors.kserve.service.KServeDeploymentConfig",
    )

    model_format: str = "sklearn"
    runtime: str | None = None
    protocol: str = "v1"
    min_replicas: int | None = Field(default=1, ge=0)
    max_replicas: int | None = Field(default=None, ge=1)
    resources: dict[str, dict[str, str]] = Field(default_factory=dict)
    args: list[str] = Field(default_factory=list)
    deployment_mode: str | None = None

    @field_validator("model_format")
    @classmethod
    def _known_format(cls, v: str) -> str:
        if v not in MODEL_FORMATS:
            raise ValueError(
                f"model_format {v!r} is not one KServe serves out of the box: use one of "
                f"{', '.join(MODEL_FORMATS)} (or set `runtime` to your ServingRuntime "
                "and the format it declares)."
            )
        return v

    @field_validator("protocol")
    @classmethod
    def _known_protocol(cls, v: str) -> str:
        return check_choice("protocol", v, PROTOCOLS)

    @field_validator("deployment_mode")
    @classmethod
    def _known_mode(cls, v: str | None) -> str | None:
        return check_mode(v)

    @field_validator("resources")
    @classmethod
    def _requests_limits(cls, v: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        unknown = set(v) - {"requests", "limits"}
        if unknown:
            raise ValueError(
                f"resources takes 'requests' and 'limits' only, not {sorted(unknown)} "
                '(e.g. {"limits": {"cpu": "1", "memory": "2Gi"}}).'
            )
        return {k: {r: str(q) for r, q in d.items()} for k, d in v.items()}


__all__ = ["MODEL_FORMATS", "PROTOCOLS", "KServeDeploymentConfig"]

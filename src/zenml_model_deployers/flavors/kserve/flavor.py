"""The `zmd-kserve` flavor: cheap to import (no kubernetes import here)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import field_validator

from zenml_model_deployers.deployer import BaseDeployerConfig
from zenml_model_deployers.kube.config import KubeDeployerConfig, KubeDeployerFlavor

FLAVOR_NAME = "zmd-kserve"
# KServe's deployment modes (the `serving.kserve.io/deploymentMode` annotation). KServe 0.15
# renamed RawDeployment to Standard; both words mean the same mode.
DEPLOYMENT_MODES = ("Serverless", "Standard", "RawDeployment")


def check_mode(v: str | None) -> str | None:
    """Validates a deployment mode (None: the cluster's default).

    Args:
        v: the mode.

    Returns:
        It.

    Raises:
        ValueError: not a KServe mode.
    """
    if v is not None and v not in DEPLOYMENT_MODES:
        raise ValueError(
            f"deployment_mode {v!r} must be one of {', '.join(DEPLOYMENT_MODES)} "
            "(None: the cluster's default, from KServe's inferenceservice-config)."
        )
    return v


class KServeDeployerConfig(KubeDeployerConfig):
    """Settings of a `zmd-kserve` model deployer component.

    Attributes:
        kubernetes_context: the kubeconfig context of the cluster (None: the current one).
        kubeconfig: the kubeconfig file (None: ``$KUBECONFIG``, else ``~/.kube/config``).
        in_cluster: use the pod's service account (when the pipeline runs in the cluster).
        kubernetes_namespace: where the InferenceServices go (it must exist).
        base_url: the ingress gateway's address (e.g. ``http://<istio-ingressgateway IP>``);
            requests carry the InferenceService's host (``Host:`` from ``status.url``), as
            KServe's docs do where DNS is not set up. Empty: ``status.url`` is called directly.
        deployment_mode: ``Serverless``, ``Standard`` (``RawDeployment``) or None (the
            cluster's default); set as the ``serving.kserve.io/deploymentMode`` annotation.
        storage_secret: the name of a ZenML secret whose keys become a Kubernetes Secret (and
            a ServiceAccount carrying it) the storage initializer reads the model with.
        default_timeout: seconds a deploy waits until the model serves.
        prometheus_url: a Prometheus that scrapes Knative's queue-proxies (Serverless mode),
            e.g. ``http://prometheus.monitoring:9090``: per-revision request metrics for
            ``policy="canary"`` and ``zmd models describe --stats`` (None: none read).
        prometheus_token: a bearer token for it, as a ZenML secret reference
            (``{{prometheus.token}}``), resolved at call time; None: no auth.
    """

    deployment_mode: str | None = None

    @field_validator("deployment_mode")
    @classmethod
    def _known_mode(cls, v: str | None) -> str | None:
        return check_mode(v)


class KServeDeployerFlavor(KubeDeployerFlavor):
    """Serves models as KServe ``InferenceService``s, updated in place."""

    FLAVOR_NAME: ClassVar[str] = FLAVOR_NAME
    DISPLAY_NAME: ClassVar[str] = "KServe (zenml-model-deployers)"
    LOGO: ClassVar[str] = "kserve"
    CONFIG_CLASS: ClassVar[type[BaseDeployerConfig]] = KServeDeployerConfig
    IMPLEMENTATION: ClassVar[str] = "zenml_model_deployers.flavors.kserve.deployer.KServeDeployer"

"""The `zmd-kserve` flavor: cheap to import (no kubernetes import here)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import ConfigDict, field_validator
from zenml.models import ServiceConnectorRequirements

from zenml_model_deployers.deployer import BaseDeployerConfig, BaseDeployerFlavor
from zenml_model_deployers.kube.config import check_token_reference

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


class KServeDeployerConfig(BaseDeployerConfig):
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

    # A plain token given by mistake must not be echoed by a validation error.
    model_config = ConfigDict(hide_input_in_errors=True)

    kubernetes_context: str | None = None
    kubeconfig: str | None = None
    in_cluster: bool = False
    kubernetes_namespace: str = "default"
    base_url: str = ""
    deployment_mode: str | None = None
    storage_secret: str | None = None
    default_timeout: float = 300.0
    prometheus_url: str | None = None
    prometheus_token: str | None = None

    @field_validator("prometheus_token")
    @classmethod
    def _token_reference(cls, v: str | None) -> str | None:
        return check_token_reference(v)

    @field_validator("deployment_mode")
    @classmethod
    def _known_mode(cls, v: str | None) -> str | None:
        return check_mode(v)

    @property
    def is_remote(self) -> bool:
        """The models serve in a cluster, not on this machine."""
        return True


class KServeDeployerFlavor(BaseDeployerFlavor):
    """Serves models as KServe ``InferenceService``s, updated in place."""

    FLAVOR_NAME: ClassVar[str] = FLAVOR_NAME
    DISPLAY_NAME: ClassVar[str] = "KServe (zenml-model-deployers)"
    LOGO: ClassVar[str] = "kserve"
    CONFIG_CLASS: ClassVar[type[BaseDeployerConfig]] = KServeDeployerConfig
    IMPLEMENTATION: ClassVar[str] = "zenml_model_deployers.flavors.kserve.deployer.KServeDeployer"

    @property
    def service_connector_requirements(self) -> ServiceConnectorRequirements | None:
        """A ZenML Kubernetes service connector may give the cluster's credentials.

        Returns:
            The requirement (a ``kubernetes-cluster`` resource).
        """
        return ServiceConnectorRequirements(resource_type="kubernetes-cluster")

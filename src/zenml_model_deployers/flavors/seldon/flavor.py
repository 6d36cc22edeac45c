"""The `zmd-seldon` flavor: cheap to import (no kubernetes import here)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import ConfigDict, field_validator
from zenml.models import ServiceConnectorRequirements

from zenml_model_deployers.deployer import BaseDeployerConfig, BaseDeployerFlavor
from zenml_model_deployers.kube.config import check_token_reference

FLAVOR_NAME = "zmd-seldon"
SELDON_APIS = ("v2", "v1")


class SeldonDeployerConfig(BaseDeployerConfig):
    """Settings of a `zmd-seldon` model deployer component.

    Attributes:
        kubernetes_context: the kubeconfig context of the cluster (None: the current one).
        kubeconfig: the kubeconfig file (None: ``$KUBECONFIG``, else ``~/.kube/config``).
        in_cluster: use the pod's service account (when the pipeline runs in the cluster).
        kubernetes_namespace: where the Seldon resources go (it must exist).
        base_url: the Seldon inference endpoint, e.g. the external address of the
            ``seldon-mesh`` service (Core 2) or of the Istio/Ambassador ingress (Core 1).
        seldon_api: ``v2`` (Seldon Core 2 ``Model``, default) or ``v1`` (``SeldonDeployment``).
        server: Core 2: the ``Server`` to schedule models on (None: Seldon picks one by the
            model's requirements).
        storage_secret: the name of a ZenML secret whose keys become a Kubernetes Secret the
            model server reads storage with (e.g. an rclone config); None: no credentials.
        default_timeout: seconds a deploy waits until the model serves.
        prometheus_url: a Prometheus that scrapes the model servers (and Seldon's agents),
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
    seldon_api: str = "v2"
    server: str | None = None
    storage_secret: str | None = None
    default_timeout: float = 300.0
    prometheus_url: str | None = None
    prometheus_token: str | None = None

    @field_validator("prometheus_token")
    @classmethod
    def _token_reference(cls, v: str | None) -> str | None:
        return check_token_reference(v)

    @field_validator("seldon_api")
    @classmethod
    def _known_api(cls, v: str) -> str:
        if v not in SELDON_APIS:
            raise ValueError(
                f"seldon_api {v!r} must be 'v2' (Seldon Core 2) or 'v1' (Seldon Core 1)."
            )
        return v

    @property
    def is_remote(self) -> bool:
        """The models serve in a cluster, not on this machine."""
        return True


class SeldonDeployerFlavor(BaseDeployerFlavor):
    """Serves models on Seldon Core 2 (``Model``) or Core 1 (``SeldonDeployment``), in place."""

    FLAVOR_NAME: ClassVar[str] = FLAVOR_NAME
    DISPLAY_NAME: ClassVar[str] = "Seldon Core (zenml-model-deployers)"
    LOGO: ClassVar[str] = "seldon"
    CONFIG_CLASS: ClassVar[type[BaseDeployerConfig]] = SeldonDeployerConfig
    IMPLEMENTATION: ClassVar[str] = "zenml_model_deployers.flavors.seldon.deployer.SeldonDeployer"

    @property
    def service_connector_requirements(self) -> ServiceConnectorRequirements | None:
        """A ZenML Kubernetes service connector may give the cluster's credentials.

        Returns:
            The requirement (a ``kubernetes-cluster`` resource).
        """
        return ServiceConnectorRequirements(resource_type="kubernetes-cluster")

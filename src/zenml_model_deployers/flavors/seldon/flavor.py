"""The `zmd-seldon` flavor: cheap to import (no kubernetes import here)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import field_validator

from zenml_model_deployers.deployer import BaseDeployerConfig
from zenml_model_deployers.kube.config import KubeDeployerConfig, KubeDeployerFlavor

FLAVOR_NAME = "zmd-seldon"
SELDON_APIS = ("v2", "v1")


class SeldonDeployerConfig(KubeDeployerConfig):
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

    seldon_api: str = "v2"
    server: str | None = None

    @field_validator("seldon_api")
    @classmethod
    def _known_api(cls, v: str) -> str:
        if v not in SELDON_APIS:
            raise ValueError(
                f"seldon_api {v!r} must be 'v2' (Seldon Core 2) or 'v1' (Seldon Core 1)."
            )
        return v


class SeldonDeployerFlavor(KubeDeployerFlavor):
    """Serves models on Seldon Core 2 (``Model``) or Core 1 (``SeldonDeployment``), in place."""

    FLAVOR_NAME: ClassVar[str] = FLAVOR_NAME
    DISPLAY_NAME: ClassVar[str] = "Seldon Core (zenml-model-deployers)"
    LOGO: ClassVar[str] = "seldon"
    CONFIG_CLASS: ClassVar[type[BaseDeployerConfig]] = SeldonDeployerConfig
    IMPLEMENTATION: ClassVar[str] = "zenml_model_deployers.flavors.seldon.deployer.SeldonDeployer"

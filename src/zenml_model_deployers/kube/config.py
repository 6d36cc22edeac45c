"""The cluster flavors' shared settings: the component's (which cluster, endpoint, storage
credentials, Prometheus) and the part of a deployment config that says where the deployment
lives and how it is reached (none of it is in the revision's hash)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import ConfigDict, field_validator, model_validator
from zenml.models import ServiceConnectorRequirements
from zenml.utils.secret_utils import SecretField

from zenml_model_deployers.config import DeploymentConfig
from zenml_model_deployers.deployer import BaseDeployerConfig, BaseDeployerFlavor
from zenml_model_deployers.kube.client import KubeTarget
from zenml_model_deployers.secrets import reject_plain_secrets


def check_choice(field: str, value: str, choices: tuple[str, ...]) -> str:
    """A setting that takes one of a few words.

    Args:
        field: the setting's name.
        value: its value.
        choices: the words it takes.

    Returns:
        The value, unchanged.

    Raises:
        ValueError: another word (the message lists the words).
    """
    if value not in choices:
        words = " or ".join(repr(c) for c in choices)
        raise ValueError(f"{field} {value!r} must be {words}.")
    return value


def check_token_reference(v: str | None) -> str | None:
    """A Prometheus token must be a ZenML secret reference, never the value itself.

    Args:
        v: the setting.

    Returns:
        It, unchanged.

    Raises:
        ValueError: a plain value.
    """
    from zenml_model_deployers.secrets import is_secret_reference

    if v is not None and not is_secret_reference(v):
        raise ValueError(
            "prometheus_token must be a ZenML secret reference such as "
            "'{{prometheus.token}}' (`zenml secret create prometheus -i`, key `token`), never "
            "the token itself."
        )
    return v


def check_secret_name(v: str | None) -> str | None:
    """A storage secret is named, never given: a ZenML secret's name, not its values.

    Args:
        v: the setting.

    Returns:
        It, unchanged.

    Raises:
        ValueError: a reference or credentials (the value is not echoed).
    """
    if v is not None and ("{" in v or "=" in v or ":" in v):
        raise ValueError(
            "storage_secret is the *name* of a ZenML secret (e.g. 'gcs-reader'), never "
            "credentials: `zenml secret create gcs-reader -i`."
        )
    return v


class KubeDeployerConfig(BaseDeployerConfig):
    """Base of the cluster flavors' component settings (`zmd-seldon`, `zmd-kserve`): which
    cluster and namespace, the inference endpoint, storage credentials and Prometheus. Each
    flavor documents these fields in its own words and adds its own.

    Attributes:
        kubernetes_context: the kubeconfig context of the cluster (None: the current one).
        kubeconfig: the kubeconfig file (None: ``$KUBECONFIG``, else ``~/.kube/config``).
        in_cluster: use the pod's service account (when the pipeline runs in the cluster).
        kubernetes_namespace: where the resources go (it must exist).
        base_url: the inference endpoint or ingress.
        storage_secret: the name of a ZenML secret whose keys become a Kubernetes Secret the
            model server reads storage with; None: no credentials.
        prometheus_url: a Prometheus that scrapes the model servers, for per-revision request
            metrics (None: none read).
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
    storage_secret: str | None = None
    prometheus_url: str | None = None
    # ZenML's own secret field: a reference is resolved on attribute access. ZenML refuses a
    # reference on a field that has a field validator, so the check is a model validator.
    prometheus_token: str | None = SecretField(default=None)

    @model_validator(mode="before")
    @classmethod
    def _token_reference(cls, data: Any) -> Any:
        return reject_plain_secrets(
            data,
            "cluster model deployer",
            {"prometheus_token": "{{prometheus.token}}"},
            "`zenml secret create prometheus -i` (key `token`).",
        )

    @field_validator("storage_secret")
    @classmethod
    def _secret_name_only(cls, v: str | None) -> str | None:
        return check_secret_name(v)

    @property
    def is_remote(self) -> bool:
        """The models serve in a cluster, not on this machine."""
        return True


class KubeDeployerFlavor(BaseDeployerFlavor):
    """Base of the cluster flavors: a ZenML Kubernetes service connector may give the
    cluster's credentials."""

    CONFIG_CLASS: ClassVar[type[BaseDeployerConfig]] = KubeDeployerConfig

    @property
    def service_connector_requirements(self) -> ServiceConnectorRequirements | None:
        """A ZenML Kubernetes service connector may give the cluster's credentials.

        Returns:
            The requirement (a ``kubernetes-cluster`` resource).
        """
        return ServiceConnectorRequirements(resource_type="kubernetes-cluster")


class KubeDeploymentConfig(DeploymentConfig):
    """Base of the cluster flavors' configs (`zmd-seldon`, `zmd-kserve`).

    Attributes:
        storage_secret: a ZenML secret's name: its keys become the Kubernetes Secret the model
            server reads storage with (never the values in this config).
        namespace: the Kubernetes namespace (default: the component's).
        kubernetes_context: kubeconfig context (default: the component's).
        kubeconfig: kubeconfig path (default: the component's).
        in_cluster: use the pod's service account.
        connector_id: a ZenML Kubernetes service connector (set from the component).
        base_url: the inference endpoint or ingress (default: the component's).
        prometheus_url: a Prometheus scraping the model servers, for per-revision request
            metrics (default: the component's).
        prometheus_token: its bearer token, a ZenML secret reference (default: the
            component's).
    """

    # Where the deployment lives and how to reach it are not what it serves.
    PROVENANCE_FIELDS: ClassVar[frozenset[str]] = DeploymentConfig.PROVENANCE_FIELDS | {
        "namespace",
        "kubernetes_context",
        "kubeconfig",
        "in_cluster",
        "connector_id",
        "base_url",
        # Where Prometheus is (and its token) is not what the deployment serves.
        "prometheus_url",
        "prometheus_token",
    }
    model_config = ConfigDict(hide_input_in_errors=True)

    storage_secret: str | None = None
    namespace: str = ""
    kubernetes_context: str | None = None
    kubeconfig: str | None = None
    in_cluster: bool = False
    connector_id: str | None = None
    base_url: str = ""
    prometheus_url: str | None = None
    prometheus_token: str | None = None

    @field_validator("prometheus_token")
    @classmethod
    def _token_reference(cls, v: str | None) -> str | None:
        return check_token_reference(v)

    @field_validator("storage_secret")
    @classmethod
    def _secret_name_only(cls, v: str | None) -> str | None:
        return check_secret_name(v)

    def target(self) -> KubeTarget:
        """Where the resources live.

        Returns:
            The cluster and namespace.
        """
        return KubeTarget(
            context=self.kubernetes_context,
            kubeconfig=self.kubeconfig,
            in_cluster=self.in_cluster,
            connector_id=self.connector_id,
            namespace=self.namespace or "default",
        )

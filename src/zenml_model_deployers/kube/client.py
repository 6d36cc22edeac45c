"""How to reach a cluster: kubeconfig context, in-cluster config or a ZenML service connector,
and the errors of talking to it, mapped onto our typed exceptions with the API server's words.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from zenml_model_deployers.errors import ConfigurationError, DeploymentError

# Kubernetes' own environment variable for an in-cluster pod.
_IN_CLUSTER_ENV = "KUBERNETES_SERVICE_HOST"


class KubeTarget(BaseModel):
    """Where a deployment's resources live.

    Attributes:
        context: the kubeconfig context (None: the kubeconfig's current context).
        kubeconfig: the kubeconfig file (None: ``$KUBECONFIG``, else ``~/.kube/config``).
        in_cluster: use the pod's service account (inside a cluster).
        connector_id: a ZenML Kubernetes service connector to get the client from.
        namespace: the namespace of every resource.
    """

    model_config = ConfigDict(frozen=True)

    context: str | None = None
    kubeconfig: str | None = None
    in_cluster: bool = False
    connector_id: str | None = None
    namespace: str = "default"

    def kubeconfig_path(self) -> Path:
        """The kubeconfig file this target reads (the first one of ``$KUBECONFIG``).

        Returns:
            A path (it may not exist).
        """
        if self.kubeconfig:
            return Path(self.kubeconfig).expanduser()
        env = os.environ.get("KUBECONFIG", "")
        first = env.split(os.pathsep)[0] if env else ""
        return Path(first).expanduser() if first else Path.home() / ".kube" / "config"


def api_client(target: KubeTarget) -> Any:
    """A ``kubernetes.client.ApiClient`` for the target.

    Args:
        target: where to connect.

    Returns:
        The client (its own configuration: the process-wide default is never touched).

    Raises:
        ConfigurationError: no kubeconfig, unknown context, not in a cluster, bad connector.
    """
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    if target.connector_id:
        return _connector_client(target.connector_id)
    if target.in_cluster:
        if not os.environ.get(_IN_CLUSTER_ENV):
            raise ConfigurationError(
                "in_cluster=True but this process does not run in a Kubernetes pod "
                f"(${_IN_CLUSTER_ENV} is not set).",
                hint="set kubernetes_context (and a kubeconfig) when running outside the cluster.",
            )
        cfg = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=cfg)
        except ConfigException as e:
            raise ConfigurationError(f"In-cluster Kubernetes configuration failed: {e}") from e
        return client.ApiClient(configuration=cfg)
    path = target.kubeconfig_path()
    if not path.is_file():
        raise ConfigurationError(
            f"No kubeconfig at {path} (the kubeconfig this deployer reads).",
            hint="point $KUBECONFIG or the component's `kubeconfig` at one, set "
            "`in_cluster=True` inside a cluster, or link a ZenML Kubernetes service connector.",
        )
    try:
        return config.new_client_from_config(config_file=str(path), context=target.context)
    except ConfigException as e:
        raise ConfigurationError(
            f"Kubernetes context {target.context or '(current)'} of {path} cannot be used: {e}",
            hint="list the contexts with `kubectl config get-contexts` and set "
            "`kubernetes_context` to one of them.",
        ) from e


def _connector_client(connector_id: str) -> Any:
    """The client of a ZenML Kubernetes service connector (its credentials stay in ZenML).

    A direct ``kubernetes`` connector is connected without ZenML's own verification: in ZenML
    0.98 it calls ``ApiClient.call_api(response_type=...)``, which the kubernetes client removed
    in version 26 (ZenML's Kubernetes integration pins ``kubernetes<26``). The first API call
    (the namespace check) verifies the credentials instead. Cloud connectors (AWS, GCP, Azure)
    verify themselves and hand out a Kubernetes connector, connected the same way.
    """
    from zenml.client import Client
    from zenml.service_connectors.service_connector_registry import (
        service_connector_registry,
    )

    try:
        model = Client().get_service_connector(
            connector_id, allow_name_prefix_match=False, expand_secrets=True
        )
        connector = service_connector_registry.instantiate_connector(model=model)
        if model.type != "kubernetes":
            connector = connector.get_connector_client(
                resource_type="kubernetes-cluster", resource_id=model.resource_id
            )
        return connector.connect(verify=False)
    except Exception as e:
        raise ConfigurationError(
            f"ZenML service connector {connector_id} gave no Kubernetes client: "
            f"{type(e).__name__}: {e}",
            hint="check it with `zenml service-connector verify <name> "
            "--resource-type kubernetes-cluster`.",
        ) from e


def status_message(error: Any) -> str:
    """The API server's own message from an ``ApiException`` (its Status body), else its text.

    Args:
        error: a ``kubernetes.client.ApiException``.

    Returns:
        The message.
    """
    body = getattr(error, "body", None)
    if body:
        with contextlib.suppress(ValueError, TypeError):
            data = json.loads(body)
            if isinstance(data, dict) and data.get("message"):
                return str(data["message"])
        return str(body)[:2000]
    return f"{getattr(error, 'status', '?')} {getattr(error, 'reason', '')}".strip()


@contextlib.contextmanager
def kube_errors(what: str, deployment_name: str | None, server: str = "") -> Iterator[None]:
    """Turns the Kubernetes client's errors into typed errors carrying the API server's words.

    Args:
        what: what was being done, e.g. "Creating Model 'iris' in namespace 'ml'".
        deployment_name: the deployment concerned.
        server: the API server's address, for connection errors.

    Yields:
        Nothing.

    Raises:
        DeploymentError: the call failed (403 names the verb and resource, as the server does).
    """
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        yield
    except ApiException as e:
        message = status_message(e)
        if e.status == 403:
            raise DeploymentError(
                f"{what}: the Kubernetes API server refused (403 Forbidden).",
                deployment_name=deployment_name,
                backend_message=message,
                hint="grant the deployer's identity the RBAC verbs the flavor needs "
                "(see the flavor's docs page, 'RBAC'); `kubectl auth can-i` checks them.",
            ) from e
        raise DeploymentError(
            f"{what}: the Kubernetes API server answered {e.status} {e.reason}.",
            deployment_name=deployment_name,
            backend_message=message,
        ) from e
    except HTTPError as e:
        raise DeploymentError(
            f"{what}: cannot reach the Kubernetes API server {server}: {type(e).__name__}.",
            deployment_name=deployment_name,
            backend_message=str(e)[:1000],
            hint="check the cluster is up and the kubeconfig context points at it.",
        ) from e


def api_status(error: BaseException) -> int | None:
    """The HTTP status behind a typed error raised by :func:`kube_errors` (None if none).

    Args:
        error: an exception.

    Returns:
        e.g. 404.
    """
    cause = error.__cause__
    status = getattr(cause, "status", None)
    return status if isinstance(status, int) else None


def component_defaults(config: Any, component: Any, connector: Any = None) -> dict[str, Any]:
    """What a cluster flavor's deployment config takes from its component: namespace,
    endpoint, kubeconfig context/file, in-cluster auth, service connector, storage secret
    and Prometheus (only where the config leaves them unset).

    Args:
        config: the deployment config (``namespace``, ``base_url``, ``kubernetes_context``,
            ``kubeconfig``, ``in_cluster``, ``connector_id``, ``storage_secret``,
            ``prometheus_url``, ``prometheus_token``).
        component: the component's settings (``kubernetes_namespace`` and the same names).
        connector: the component's linked ZenML service connector, if any.

    Returns:
        The fields to update (empty: nothing to fill).
    """
    update: dict[str, Any] = {}
    if not config.namespace:
        update["namespace"] = component.kubernetes_namespace
    if not config.base_url and component.base_url:
        update["base_url"] = component.base_url
    if config.kubernetes_context is None and component.kubernetes_context:
        update["kubernetes_context"] = component.kubernetes_context
    if config.kubeconfig is None and component.kubeconfig:
        update["kubeconfig"] = component.kubeconfig
    if not config.in_cluster and component.in_cluster:
        update["in_cluster"] = True
    if config.connector_id is None and connector is not None:
        update["connector_id"] = str(connector)
    if config.storage_secret is None and component.storage_secret:
        update["storage_secret"] = component.storage_secret
    # Where per-revision metrics are read (components without the settings have none). The
    # token goes on as the component holds it, a secret reference: reading the attribute
    # would resolve it (ZenML's secret fields), and the value must never reach a config.
    raw = component.model_dump()
    for key in ("prometheus_url", "prometheus_token"):
        if getattr(config, key, None) is None and raw.get(key):
            update[key] = raw[key]
    return update

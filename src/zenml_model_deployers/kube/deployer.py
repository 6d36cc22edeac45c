"""The deployer base of the cluster flavors (`zmd-seldon`, `zmd-kserve`)."""

from __future__ import annotations

from typing import Any

from zenml_model_deployers.config import DeploymentConfig
from zenml_model_deployers.deployer import BaseDeployer
from zenml_model_deployers.kube.client import component_defaults


class KubeDeployer(BaseDeployer):
    """Base of the cluster flavors' deployers: a deployment config takes what it leaves unset
    from the component (:func:`kube.client.component_defaults`, then :meth:`flavor_defaults`).
    """

    def prepare_config(self, config: DeploymentConfig) -> DeploymentConfig:
        """Fills what the config leaves to the component: cluster, namespace, endpoint,
        in-cluster auth, service connector, storage secret, Prometheus, then the flavor's own
        settings (none of the connection settings is in the config hash).

        Args:
            config: a config of this flavor.

        Returns:
            The completed config (the same object when nothing is left to fill).
        """
        update = component_defaults(config, self.config, getattr(self, "connector", None))
        update.update(self.flavor_defaults(config))
        if not update:
            return config
        return type(config).model_validate({**config.model_dump(), **update})

    def flavor_defaults(self, config: DeploymentConfig) -> dict[str, Any]:
        """The flavor's own settings the config takes from the component (default: none).

        Args:
            config: a config of this flavor.

        Returns:
            The fields to update.
        """
        return {}

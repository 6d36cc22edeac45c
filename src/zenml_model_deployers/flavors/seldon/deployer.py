"""The `zmd-seldon` model deployer."""

from __future__ import annotations

from typing import Any, ClassVar, cast

from zenml.model_deployers.base_model_deployer import BaseModelDeployerFlavor

from zenml_model_deployers.config import DeploymentConfig
from zenml_model_deployers.flavors.seldon.flavor import SeldonDeployerConfig, SeldonDeployerFlavor
from zenml_model_deployers.flavors.seldon.service import (
    SeldonDeploymentConfig,
    SeldonDeploymentService,
)
from zenml_model_deployers.kube.deployer import KubeDeployer


class SeldonDeployer(KubeDeployer):
    """Deploys models to Seldon Core on Kubernetes; updates them in place.

    On top of the guarantees of :class:`BaseDeployer`: one ``Model`` per deployment, named
    after it (same name and URL for every revision); an update patches it (never replaces it)
    and a version Seldon cannot load is rolled back to the previous spec; ``stop`` unloads the
    model and keeps the record, ``start`` loads it again; ``delete`` removes every resource
    and Secret the deployment made and nothing else; a resource of the same name that we do
    not own is never touched.
    """

    NAME: ClassVar[str] = "Seldon Core (zmd)"
    FLAVOR: ClassVar[type[BaseModelDeployerFlavor]] = SeldonDeployerFlavor
    SERVICE_CLASS: ClassVar[type[SeldonDeploymentService]] = SeldonDeploymentService

    @property
    def seldon_config(self) -> SeldonDeployerConfig:
        """This component's settings."""
        return cast(SeldonDeployerConfig, self.config)

    def flavor_defaults(self, config: DeploymentConfig) -> dict[str, Any]:
        """The component's server and Seldon API, where the config leaves them unset.

        Args:
            config: a `SeldonDeploymentConfig`.

        Returns:
            The fields to update.
        """
        cfg = cast(SeldonDeploymentConfig, config)
        comp = self.seldon_config
        update: dict[str, Any] = {}
        if cfg.server is None and comp.server:
            update["server"] = comp.server
        if "seldon_api" not in cfg.model_fields_set and comp.seldon_api != cfg.seldon_api:
            update["seldon_api"] = comp.seldon_api
        return update

    def package_model(self, model: Any, name: str, input_example: Any = None) -> str:
        """Saves a scikit-learn model as ``model.joblib`` (MLServer's sklearn runtime layout)
        and uploads it to the active artifact store, content-addressed.

        The cluster's model servers must be able to read the artifact store (a bucket with
        `storage_secret` credentials, or a volume they mount).

        Args:
            model: the trained estimator.
            name: the deployment name.
            input_example: unused by the sklearn runtime.

        Returns:
            The model's storage URI.
        """
        from zenml_model_deployers.kube.storage import upload_model

        return upload_model(model, "sklearn", name, input_example)

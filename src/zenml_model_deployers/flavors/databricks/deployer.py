"""The `zmd-databricks` model deployer."""

from __future__ import annotations

from typing import Any, ClassVar, cast

from zenml.model_deployers.base_model_deployer import BaseModelDeployerFlavor

from zenml_model_deployers.config import DeploymentConfig
from zenml_model_deployers.deployer import BaseDeployer
from zenml_model_deployers.errors import ConfigurationError, DeploymentError
from zenml_model_deployers.flavors.databricks.config import (
    DatabricksDeploymentConfig,
    model_uri_for,
)
from zenml_model_deployers.flavors.databricks.flavor import (
    DatabricksDeployerConfig,
    DatabricksDeployerFlavor,
)
from zenml_model_deployers.flavors.databricks.service import DatabricksDeploymentService


class DatabricksDeployer(BaseDeployer):
    """Deploys Unity Catalog models to Databricks Model Serving; updates endpoints in place.

    On top of the guarantees of :class:`BaseDeployer`: a new version updates the same
    endpoint (same URL) and the previous served entity serves until the new config is ready;
    a failed update is undone on Databricks; ``canary_percent`` splits traffic with routes;
    ``stop`` deletes the endpoint (Databricks has no stop) and ``start`` creates it again
    under the same name; an endpoint name another endpoint holds is refused, never adopted.
    """

    NAME: ClassVar[str] = "Databricks Model Serving (zmd)"
    FLAVOR: ClassVar[type[BaseModelDeployerFlavor]] = DatabricksDeployerFlavor
    SERVICE_CLASS: ClassVar[type[DatabricksDeploymentService]] = DatabricksDeploymentService

    @property
    def dbx_config(self) -> DatabricksDeployerConfig:
        """This component's settings (secret fields resolve on access: use references())."""
        return cast(DatabricksDeployerConfig, self.config)

    def references(self) -> dict[str, Any]:
        """The component's host and credential *references* (``{{name.key}}``), never values.

        ZenML resolves secret references on attribute access; the dump holds them as stored.

        Returns:
            host, token, client_id, client_secret as configured.
        """
        dump = self.dbx_config.model_dump()
        return {k: dump.get(k) for k in ("host", "token", "client_id", "client_secret")}

    def prepare_config(self, config: DeploymentConfig) -> DeploymentConfig:
        """Fills the workspace and credential references a config leaves to the component
        (none of them is in the config hash).

        Args:
            config: a `DatabricksDeploymentConfig`.

        Returns:
            The completed config.

        Raises:
            ConfigurationError: no Unity Catalog model version is named.
        """
        cfg = cast(DatabricksDeploymentConfig, config)
        if not cfg.entity_name:
            raise ConfigurationError(
                f"Deployment '{cfg.deployment_name}' names no Unity Catalog model version.",
                deployment_name=cfg.deployment_name,
                hint="pass registered_model_name='catalog.schema.model' and model_version=N "
                "(or a model object to register).",
            )
        if cfg.host:
            return cfg
        refs = self.references()
        return cfg.model_copy(update={k: v for k, v in refs.items() if v is not None})

    def register_model(
        self, model: Any, registered_model_name: str, input_example: Any = None
    ) -> str:
        """Registers a trained model in Unity Catalog through MLflow and returns its reference.

        Unity Catalog requires a signature: it is inferred from ``input_example`` and the
        model's predictions on it.

        Args:
            model: a model object the packaging layer writes as an MLflow model (see
                docs/models.md: scikit-learn, XGBoost, LightGBM, PyTorch, pyfunc).
            registered_model_name: ``catalog.schema.model``.
            input_example: example input (required by Unity Catalog for the signature).

        Returns:
            ``models:/catalog.schema.model/<new version>``.

        Raises:
            ConfigurationError: no input example, or a name that is not three-level.
            DeploymentError: MLflow or Unity Catalog refused (their message included).
        """
        from zenml_model_deployers.flavors.databricks.registry import register_model

        if registered_model_name.count(".") != 2:
            raise ConfigurationError(
                f"registered_model_name {registered_model_name!r} is not a Unity Catalog "
                "name: use 'catalog.schema.model'."
            )
        if input_example is None:
            raise ConfigurationError(
                "Registering a model in Unity Catalog needs a signature: pass input_example "
                "(a few rows of training input) so it can be inferred."
            )
        version = register_model(self.dbx_config, model, registered_model_name, input_example)
        return model_uri_for(registered_model_name, version)

    def package_model(self, model: Any, name: str, input_example: Any = None) -> str:
        """Registers a model object given to the flavor-agnostic step in Unity Catalog, as
        ``<catalog>.<schema>.<deployment name>`` from the component's defaults.

        Args:
            model: the model object.
            name: the deployment name.
            input_example: example input (for the signature).

        Returns:
            The new model version's reference.

        Raises:
            DeploymentError: the component names no catalog and schema.
        """
        cfg = self.dbx_config
        if not (cfg.catalog and cfg.schema_name):
            raise DeploymentError(
                "zmd-databricks registers model objects in Unity Catalog as "
                "catalog.schema.model, and neither the step nor the component names a catalog "
                "and schema.",
                hint="use databricks_deployer_step(registered_model_name='catalog.schema.model', "
                "...) or register the component with --catalog=... --schema_name=....",
            )
        return self.register_model(
            model, f"{cfg.catalog}.{cfg.schema_name}.{name.replace('-', '_')}", input_example
        )

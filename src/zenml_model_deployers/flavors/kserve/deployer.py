"""The `zmd-kserve` model deployer."""

from __future__ import annotations

from typing import Any, ClassVar, cast

from zenml.model_deployers.base_model_deployer import BaseModelDeployerFlavor

from zenml_model_deployers.config import DeploymentConfig
from zenml_model_deployers.errors import ConfigurationError
from zenml_model_deployers.flavors.kserve.flavor import KServeDeployerConfig, KServeDeployerFlavor
from zenml_model_deployers.flavors.kserve.service import (
    KServeDeploymentConfig,
    KServeDeploymentService,
)
from zenml_model_deployers.kube.deployer import KubeDeployer

# Model formats whose objects this flavor can package (others: pass a model_uri).
PACKAGED_FORMATS = ("sklearn", "mlflow")


class KServeDeployer(KubeDeployer):
    """Deploys models to KServe on Kubernetes; updates them in place.

    On top of the guarantees of :class:`BaseDeployer`: one ``InferenceService`` per
    deployment, named after it (same name and URL for every revision); an update patches it
    (never replaces it) and a revision KServe cannot roll out is rolled back to the previous
    spec; a canary uses the mechanism right for the cluster's deployment mode; ``stop`` sets
    KServe's ``serving.kserve.io/stop`` annotation and ``start`` removes it; ``delete``
    removes the InferenceService and the Secret and ServiceAccount it made, nothing else; an
    InferenceService of the same name that we do not own is never touched.
    """

    NAME: ClassVar[str] = "KServe (zmd)"
    FLAVOR: ClassVar[type[BaseModelDeployerFlavor]] = KServeDeployerFlavor
    SERVICE_CLASS: ClassVar[type[KServeDeploymentService]] = KServeDeploymentService

    @property
    def kserve_config(self) -> KServeDeployerConfig:
        """This component's settings."""
        return cast(KServeDeployerConfig, self.config)

    def flavor_defaults(self, config: DeploymentConfig) -> dict[str, Any]:
        """The component's deployment mode, where the config sets none.

        Args:
            config: a `KServeDeploymentConfig`.

        Returns:
            The fields to update.
        """
        cfg = cast(KServeDeploymentConfig, config)
        comp = self.kserve_config
        if cfg.deployment_mode is None and comp.deployment_mode:
            return {"deployment_mode": comp.deployment_mode}
        return {}

    def build_config(
        self,
        *,
        model: Any = None,
        model_uri: str | None = None,
        deployment_name: str | None = None,
        model_name: str = "",
        input_example: Any = None,
        **settings: Any,
    ) -> DeploymentConfig:
        """As :meth:`BaseDeployer.build_config`; a model object is packaged for its
        ``model_format`` (``sklearn``: ``model.joblib``; ``mlflow``: an MLflow model folder).

        Args:
            model: a trained model object.
            model_uri: a storage URI (or, for ``huggingface``, a Hub id).
            deployment_name: stable name.
            model_name: the model's name.
            input_example: example input (stored with an MLflow model).
            **settings: serving settings (``model_format``, ``protocol``, ...).

        Returns:
            The config.

        Raises:
            ConfigurationError: a model object of a format this flavor cannot package.
        """
        if model is not None and model_uri is None:
            fmt = str(settings.get("model_format") or "sklearn")
            if fmt not in PACKAGED_FORMATS:
                raise ConfigurationError(
                    f"zmd-kserve packages model objects as {' or '.join(PACKAGED_FORMATS)} "
                    f"only, not model_format={fmt!r}.",
                    hint="upload the model where the cluster reads it and pass model_uri=.",
                )
            # Validate the settings before packaging, as the base does.
            super().build_config(
                model_uri="-", deployment_name=deployment_name, model_name=model_name, **settings
            )
            from zenml_model_deployers.config import derive_deployment_name
            from zenml_model_deployers.kube.storage import upload_model

            name = deployment_name or derive_deployment_name(model_name or "model")
            model_uri = upload_model(model, fmt, name, input_example)
            model = None
        return super().build_config(
            model=model,
            model_uri=model_uri,
            deployment_name=deployment_name,
            model_name=model_name,
            input_example=input_example,
            **settings,
        )

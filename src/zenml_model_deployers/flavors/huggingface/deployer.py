"""The `zmd-huggingface` model deployer."""

from __future__ import annotations

from typing import Any, ClassVar, cast

from zenml.model_deployers.base_model_deployer import BaseModelDeployerFlavor

from zenml_model_deployers.config import DeploymentConfig
from zenml_model_deployers.deployer import BaseDeployer
from zenml_model_deployers.errors import ConfigurationError
from zenml_model_deployers.flavors.huggingface.config import HuggingFaceDeploymentConfig
from zenml_model_deployers.flavors.huggingface.flavor import (
    HuggingFaceDeployerConfig,
    HuggingFaceDeployerFlavor,
)
from zenml_model_deployers.flavors.huggingface.service import HuggingFaceDeploymentService, _hub


class HuggingFaceDeployer(BaseDeployer):
    """Deploys Hub models to Hugging Face Inference Endpoints; updates them in place.

    On top of the guarantees of :class:`BaseDeployer`: ``stop`` pauses the endpoint (it is
    never deleted), ``start`` resumes it on the same URL, and nothing is sent to Hugging Face
    when ``HF_HUB_OFFLINE`` forbids it (a ``ConfigurationError`` says so first).
    """

    NAME: ClassVar[str] = "Hugging Face Inference Endpoints (zmd)"
    FLAVOR: ClassVar[type[BaseModelDeployerFlavor]] = HuggingFaceDeployerFlavor
    SERVICE_CLASS: ClassVar[type[HuggingFaceDeploymentService]] = HuggingFaceDeploymentService

    @property
    def hf_config(self) -> HuggingFaceDeployerConfig:
        """This component's settings."""
        return cast(HuggingFaceDeployerConfig, self.config)

    def token_reference(self) -> str:
        """The component's token *reference* (``{{name.key}}``), never its value.

        ZenML resolves secret references on attribute access; the dump holds them as stored.

        Returns:
            The reference.
        """
        return str(self.hf_config.model_dump()["token"])

    def complete_config(self, config: HuggingFaceDeploymentConfig) -> HuggingFaceDeploymentConfig:
        """Fills the namespace and token reference a config leaves to the component.

        Args:
            config: a deployment config.

        Returns:
            The config with `namespace` and `token` set (neither is in the config hash).
        """
        update: dict[str, Any] = {}
        if not config.token:
            update["token"] = self.token_reference()
        if not config.namespace and self.hf_config.namespace:
            update["namespace"] = self.hf_config.namespace
        return config.model_copy(update=update) if update else config

    def prepare_config(self, config: DeploymentConfig) -> DeploymentConfig:
        """Refuses offline mode, then fills the namespace and token reference (see
        :meth:`complete_config`).

        Args:
            config: a `HuggingFaceDeploymentConfig`.

        Returns:
            The completed config.
        """
        _hub().check_offline()
        return self.complete_config(cast(HuggingFaceDeploymentConfig, config))

    def package_model(self, model: Any, name: str, input_example: Any = None) -> str:
        """Inference Endpoints serve Hub repositories: a model object must be pushed first.

        Args:
            model: the model object.
            name: the deployment name.
            input_example: unused.

        Raises:
            ConfigurationError: always, with the fix.
        """
        raise ConfigurationError(
            "zmd-huggingface serves models from the Hugging Face Hub; it cannot package a "
            f"{type(model).__module__}.{type(model).__name__} object.",
            hint="push the model first (e.g. `model.push_to_hub('org/name')`), then deploy "
            "repository='org/name' with the pushed commit as `revision`.",
        )

"""The `zmd-bentoml` model deployer."""

from __future__ import annotations

from typing import Any, ClassVar

from zenml.model_deployers.base_model_deployer import BaseModelDeployerFlavor

from zenml_model_deployers.config import DeploymentConfig
from zenml_model_deployers.deployer import BaseDeployer
from zenml_model_deployers.flavors.bentoml.flavor import BentoMLDeployerFlavor
from zenml_model_deployers.flavors.bentoml.service import BentoMLDeploymentService


class BentoMLDeployer(BaseDeployer):
    """Serves bentos locally, each behind a stable URL that survives updates."""

    NAME: ClassVar[str] = "BentoML (zmd)"
    FLAVOR: ClassVar[type[BaseModelDeployerFlavor]] = BentoMLDeployerFlavor
    SERVICE_CLASS: ClassVar[type[BentoMLDeploymentService]] = BentoMLDeploymentService

    def package_model(self, model: Any, name: str, input_example: Any = None) -> str:
        """A bento, a saved BentoML model, or a trained model object -> a bento tag.

        A model object is saved with BentoML's framework saver and served by a generated
        service whose `predict` API calls the model's `predict`.

        Args:
            model: a `bentoml.Bento`, a `bentoml.Model`, or a trained model (e.g. scikit-learn).
            name: the deployment name (the saved model's name).
            input_example: unused.

        Returns:
            The bento's tag.
        """
        import bentoml

        from zenml_model_deployers.flavors.bentoml.packaging import (
            build_generic_bento,
            save_model,
        )

        if isinstance(model, bentoml.Bento):
            return str(model.tag)
        return build_generic_bento(save_model(model, name.replace("-", "_")), name)

    def prepare_config(self, config: DeploymentConfig) -> DeploymentConfig:
        """Pins the bento tag (`name` / `name:latest` -> the concrete version).

        A tag that is not in the store fails here, before anything starts. Pinning makes the
        recorded revision exact and a newly built bento a new revision.

        Args:
            config: a `BentoMLDeploymentConfig`.

        Returns:
            The config with a concrete tag.
        """
        from zenml_model_deployers.flavors.bentoml.packaging import resolve_bento

        tag = resolve_bento(config.model_uri).tag
        return config if tag == config.model_uri else config.model_copy(update={"model_uri": tag})

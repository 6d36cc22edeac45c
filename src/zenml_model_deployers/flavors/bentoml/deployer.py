"""The `zmd-bentoml` model deployer."""

from __future__ import annotations

from typing import Any, ClassVar

from zenml.model_deployers.base_model_deployer import BaseModelDeployerFlavor

from zenml_model_deployers.config import DeploymentConfig
from zenml_model_deployers.deployer import BaseDeployer
from zenml_model_deployers.errors import ConfigurationError
from zenml_model_deployers.flavors.bentoml.flavor import BentoMLDeployerFlavor
from zenml_model_deployers.flavors.bentoml.service import BentoMLDeploymentService


class BentoMLDeployer(BaseDeployer):
    """Serves bentos locally, each behind a stable URL that survives updates."""

    NAME: ClassVar[str] = "BentoML (zmd)"
    FLAVOR: ClassVar[type[BaseModelDeployerFlavor]] = BentoMLDeployerFlavor
    SERVICE_CLASS: ClassVar[type[BentoMLDeploymentService]] = BentoMLDeploymentService

    def package_model(self, model: Any, name: str, input_example: Any = None) -> str:
        """A bento, a saved BentoML model, or a trained model object -> a bento tag.

        A model object is stored in BentoML's model store by the packaging layer (as its
        library's MLflow model, ``bentoml.mlflow``) and served by a generated service whose
        `predict` API calls the model's `predict`: on records when ``input_example`` is a
        DataFrame, else on an array. A `bentoml.Model` (saved with any framework saver) is
        served by the same service on an array.

        Args:
            model: a `bentoml.Bento`, a `bentoml.Model`, or a trained model (scikit-learn,
                XGBoost, LightGBM, PyTorch, `mlflow.pyfunc.PythonModel`).
            name: the deployment name (the stored model's name).
            input_example: optional example input (the model's signature: the request's
                columns or the array's dtype).

        Returns:
            The bento's tag.

        Raises:
            ConfigurationError: a model object of no supported library (the message names
                them, and `model_uri=` with a bento tag as the way out).
        """
        import bentoml

        from zenml_model_deployers.flavors.bentoml.packaging import build_generic_bento
        from zenml_model_deployers.packaging.bentoml_store import store_model

        if isinstance(model, bentoml.Bento):
            return str(model.tag)
        if isinstance(model, bentoml.Model):
            return build_generic_bento(str(model.tag), name)
        try:
            stored = store_model(model, name.replace("-", "_"), input_example)
        except ConfigurationError as e:
            # The layer's way out names `model_uri=`; here that is a bento's tag.
            raise ConfigurationError(
                str(e).splitlines()[0],
                hint="pass one of those, or build a bento with your own service "
                "(`bento_builder_step(model=..., service=..., model_type=...)`, BentoML's "
                "framework savers) and deploy it, or its tag as `model_uri=`.",
            ) from e
        return build_generic_bento(
            stored.tag, name, stored.input_columns, stored.input_dtype, stored.requirements
        )

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

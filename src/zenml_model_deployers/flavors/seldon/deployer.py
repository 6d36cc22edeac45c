"""The `zmd-seldon` model deployer."""

from __future__ import annotations

from typing import Any, ClassVar

from zenml.model_deployers.base_model_deployer import BaseModelDeployerFlavor

from zenml_model_deployers.errors import ConfigurationError
from zenml_model_deployers.flavors.seldon.flavor import SeldonDeployerFlavor
from zenml_model_deployers.flavors.seldon.service import SeldonDeploymentService
from zenml_model_deployers.kube.deployer import KubeDeployer, default_format
from zenml_model_deployers.kube.storage import RUNTIMES


class SeldonDeployer(KubeDeployer):
    """Deploys models to Seldon Core on Kubernetes; updates them in place.

    On top of the guarantees of :class:`BaseDeployer`: one ``Model`` per deployment, named
    after it (same name and URL for every revision); an update patches it (never replaces it)
    and a version Seldon cannot load is rolled back to the previous spec; ``stop`` unloads the
    model and keeps the record, ``start`` loads it again; ``delete`` removes every resource
    and Secret the deployment made and nothing else; a resource of the same name that we do
    not own is never touched. A model object is saved as ``model.joblib`` (MLServer's sklearn
    runtime layout).
    """

    NAME: ClassVar[str] = "Seldon Core (zmd)"
    FLAVOR: ClassVar[type[BaseModelDeployerFlavor]] = SeldonDeployerFlavor
    SERVICE_CLASS: ClassVar[type[SeldonDeploymentService]] = SeldonDeploymentService
    # The component's server and Seldon API, where the config leaves them unset.
    COMPONENT_SETTINGS: ClassVar[tuple[str, ...]] = ("server", "seldon_api")
    MODEL_SETTINGS: ClassVar[bool] = True

    def package_format(self, settings: dict[str, Any], model: Any) -> str:
        """The first of the ``requirements`` that is a packaged format, else the model's own
        runtime's. Seldon Core 1 (``seldon_api="v1"``) takes scikit-learn models only (its
        ``SKLEARN_SERVER`` loads ``model.joblib``).

        Args:
            settings: the serving settings given to ``build_config``.
            model: the model object.

        Returns:
            The format.

        Raises:
            ConfigurationError: a model of no supported library, or not scikit-learn on Core 1.
        """
        own = default_format(model, self.flavor_name())
        api = settings.get("seldon_api") or getattr(self.config, "seldon_api", None) or "v2"
        if api == "v1":
            if own != "sklearn":
                raise ConfigurationError(
                    f"zmd-seldon packages only scikit-learn models for Seldon Core 1, not a "
                    f"{type(model).__module__}.{type(model).__qualname__}.",
                    hint='use seldon_api="v2" (Core 2 loads XGBoost, LightGBM and MLflow '
                    "models into MLServer), or save the model yourself and pass model_uri= "
                    "with its implementation=.",
                )
            return own
        asked = [r for r in settings.get("requirements") or [] if r in RUNTIMES]
        return asked[0] if asked else own

    def format_settings(self, fmt: str, settings: dict[str, Any]) -> dict[str, Any]:
        """``requirements=[fmt]`` where unset: Seldon schedules the model on a server with
        that capability (MLServer's).

        Args:
            fmt: the packaged format.
            settings: the serving settings given.

        Returns:
            The settings to add.
        """
        return {} if settings.get("requirements") else {"requirements": [fmt]}

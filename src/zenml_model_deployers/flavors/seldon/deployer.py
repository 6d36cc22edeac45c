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

    def _seldon_api(self, settings: dict[str, Any]) -> str:
        return str(settings.get("seldon_api") or getattr(self.config, "seldon_api", None) or "v2")

    def writes_model_settings(self, settings: dict[str, Any]) -> bool:
        """Core 2 only: its agent loads the folder by the ``model-settings.json`` in it, which
        names the runtime and file whatever the ``requirements`` say. Core 1's prepackaged server
        sets MLServer's runtime and model name (``classifier``, the graph node the executor
        calls) in its environment, and a ``model-settings.json`` in the folder would override
        both: the model would be served under another name and every request answered 404.

        Args:
            settings: the serving settings given to ``build_config``.

        Returns:
            True for Seldon Core 2.
        """
        return self._seldon_api(settings) == "v2"

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
        if self._seldon_api(settings) == "v1":
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

"""The `zmd-kserve` model deployer."""

from __future__ import annotations

from typing import Any, ClassVar

from zenml.model_deployers.base_model_deployer import BaseModelDeployerFlavor

from zenml_model_deployers.errors import ConfigurationError
from zenml_model_deployers.flavors.kserve.flavor import KServeDeployerFlavor
from zenml_model_deployers.flavors.kserve.service import KServeDeploymentService
from zenml_model_deployers.kube.deployer import KubeDeployer, default_format
from zenml_model_deployers.kube.storage import RUNTIMES

# Model formats whose objects this flavor can package (others: pass a model_uri).
PACKAGED_FORMATS = RUNTIMES


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
    # The component's deployment mode, where the config sets none.
    COMPONENT_SETTINGS: ClassVar[tuple[str, ...]] = ("deployment_mode",)

    def package_format(self, settings: dict[str, Any], model: Any) -> str:
        """The settings' ``model_format``, else the model's own runtime's (``sklearn``:
        ``model.joblib``; ``xgboost``: ``model.json``; ``lightgbm``: ``model.bst``; PyTorch and
        pyfunc: ``mlflow``, an MLflow model folder).

        Args:
            settings: the serving settings given to ``build_config``.
            model: the model object.

        Returns:
            The format.

        Raises:
            ConfigurationError: a format this flavor cannot package, or a model of no
                supported library.
        """
        fmt = str(settings.get("model_format") or default_format(model, self.flavor_name()))
        if fmt not in PACKAGED_FORMATS:
            raise ConfigurationError(
                f"zmd-kserve packages model objects as {', '.join(PACKAGED_FORMATS)} "
                f"only, not model_format={fmt!r}.",
                hint="leave model_format unset (the model's own runtime is picked), or upload "
                "the model where the cluster reads it and pass model_uri=.",
            )
        return fmt

    def format_settings(self, fmt: str, settings: dict[str, Any]) -> dict[str, Any]:
        """``model_format=fmt`` where unset: KServe picks the runtime by it.

        Args:
            fmt: the packaged format.
            settings: the serving settings given.

        Returns:
            The settings to add.
        """
        return {} if settings.get("model_format") else {"model_format": fmt}

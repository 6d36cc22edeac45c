"""The deployer base of the cluster flavors (`zmd-seldon`, `zmd-kserve`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from zenml_model_deployers.config import DeploymentConfig
from zenml_model_deployers.deployer import BaseDeployer
from zenml_model_deployers.kube.client import component_defaults


@dataclass(frozen=True)
class _ModelInFormat:
    """A model object on its way from ``build_config`` to ``package_model``, with the format
    the deployment's settings chose for it."""

    model: Any
    fmt: str


class KubeDeployer(BaseDeployer):
    """Base of the cluster flavors' deployers: a deployment config takes what it leaves unset
    from the component (:func:`kube.client.component_defaults`, then the flavor's own
    :attr:`COMPONENT_SETTINGS`); a model object is uploaded to the artifact store in the format
    :meth:`package_format` names.
    """

    # The flavor's own component settings a deployment config takes where it leaves them unset.
    COMPONENT_SETTINGS: ClassVar[tuple[str, ...]] = ()

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
        """The component's values of :attr:`COMPONENT_SETTINGS` where the config leaves them
        unset (None, or never given) and the component sets one.

        Args:
            config: a config of this flavor.

        Returns:
            The fields to update.
        """
        update: dict[str, Any] = {}
        for key in self.COMPONENT_SETTINGS:
            value = getattr(self.config, key, None)
            current = getattr(config, key)
            unset = current is None or key not in config.model_fields_set
            if value and unset and value != current:
                update[key] = value
        return update

    def package_format(self, settings: dict[str, Any]) -> str:
        """The format a model object is packaged in for these settings (default: ``sklearn``,
        ``model.joblib`` in MLServer's sklearn runtime layout).

        Args:
            settings: the serving settings given to :meth:`build_config`.

        Returns:
            A format :func:`kube.storage.upload_model` packages.
        """
        return "sklearn"

    def build_config(self, *, model: Any = None, **kwargs: Any) -> DeploymentConfig:
        """As :meth:`BaseDeployer.build_config`; a model object is packaged in the format
        :meth:`package_format` picks for the settings (checked before anything else).

        Args:
            model: a trained model object.
            **kwargs: the arguments of :meth:`BaseDeployer.build_config`.

        Returns:
            The config.
        """
        if model is not None and kwargs.get("model_uri") is None:
            model = _ModelInFormat(model, self.package_format(kwargs))
        return super().build_config(model=model, **kwargs)

    def package_model(self, model: Any, name: str, input_example: Any = None) -> str:
        """Saves a model object in its format and uploads it to the active artifact store,
        content-addressed.

        The cluster's model servers must be able to read the artifact store (a bucket with
        `storage_secret` credentials, or a volume they mount).

        Args:
            model: the trained model.
            name: the deployment name.
            input_example: example input (stored with an MLflow model).

        Returns:
            The model's storage URI.
        """
        from zenml_model_deployers.kube.storage import upload_model

        fmt = self.package_format({})
        if isinstance(model, _ModelInFormat):
            model, fmt = model.model, model.fmt
        return upload_model(model, fmt, name, input_example)

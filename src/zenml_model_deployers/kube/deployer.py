"""The deployer base of the cluster flavors (`zmd-seldon`, `zmd-kserve`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from zenml_model_deployers.config import DeploymentConfig
from zenml_model_deployers.deployer import BaseDeployer
from zenml_model_deployers.kube.client import component_defaults
from zenml_model_deployers.packaging.libraries import detect_library
from zenml_model_deployers.packaging.mlflow_model import MLflowModelTarget


@dataclass(frozen=True)
class _ModelInFormat:
    """A model object on its way from ``build_config`` to ``package_model``, with the format
    the deployment's settings chose for it and whether a ``model-settings.json`` goes with it."""

    model: Any
    fmt: str
    model_settings: bool


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

    def package_format(self, settings: dict[str, Any], model: Any) -> str:
        """The format a model object is packaged in for these settings: by default its
        library's own runtime's (:data:`packaging.native.DEFAULT_FORMATS`: ``sklearn``,
        ``xgboost``, ``lightgbm``; an MLflow model for PyTorch and pyfunc).

        Args:
            settings: the serving settings given to :meth:`build_config`.
            model: the model object.

        Returns:
            A format :func:`kube.storage.upload_model` packages.

        Raises:
            ConfigurationError: a model of no supported library (the message names what is
                supported and ``model_uri=``).
        """
        return default_format(model, self.flavor_name())

    def writes_model_settings(self, settings: dict[str, Any]) -> bool:
        """Whether a model object packaged for these settings also gets MLServer's
        ``model-settings.json`` (default: no; KServe picks the runtime from the model format).

        Args:
            settings: the serving settings given to :meth:`build_config`.

        Returns:
            True to write it.
        """
        return False

    def format_settings(self, fmt: str, settings: dict[str, Any]) -> dict[str, Any]:
        """The serving settings that make the cluster pick the runtime of ``fmt``, where
        ``settings`` leaves them unset (default: none).

        Args:
            fmt: the format the model is packaged in.
            settings: the serving settings given to :meth:`build_config`.

        Returns:
            Settings to add.
        """
        return {}

    def build_config(self, *, model: Any = None, **kwargs: Any) -> DeploymentConfig:
        """As :meth:`BaseDeployer.build_config`; a model object is packaged in the format
        :meth:`package_format` picks for its library and the settings (checked before
        anything else), and the settings that select that format's runtime are filled where
        left unset (:meth:`format_settings`).

        Args:
            model: a trained model object.
            **kwargs: the arguments of :meth:`BaseDeployer.build_config`.

        Returns:
            The config.
        """
        if model is not None and kwargs.get("model_uri") is None:
            fmt = self.package_format(kwargs, model)
            kwargs = {**kwargs, **self.format_settings(fmt, kwargs)}
            model = _ModelInFormat(model, fmt, self.writes_model_settings(kwargs))
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

        if isinstance(model, _ModelInFormat):
            model, fmt, settings_file = model.model, model.fmt, model.model_settings
        else:
            fmt, settings_file = self.package_format({}, model), self.writes_model_settings({})
        return upload_model(
            model, fmt, name, input_example, settings_file, flavor=self.flavor_name()
        )


def default_format(model: Any, flavor: str) -> str:
    """The format a model object is served in when the settings name none.

    Args:
        model: the model object.
        flavor: the flavor asking (named in the error).

    Returns:
        Its native runtime's format, else ``mlflow``.

    Raises:
        ConfigurationError: no library the packaging layer knows.
    """
    from zenml_model_deployers.packaging.native import DEFAULT_FORMATS

    # Every library the layer knows has a format; any other model gets the layer's error.
    return DEFAULT_FORMATS[MLflowModelTarget().check(model, detect_library(model), flavor)]

"""The ``zmd-local`` Deployer flavor and its settings: what ``zenml deployer register
--flavor=zmd-local`` takes and what a pipeline's ``settings={"deployer": ...}`` may set.

The settings are those of ZenML's own ``local`` deployer where they apply (port and its
allocation, address; ZenML's ``auth_key`` / ``generate_auth_key`` / ``lcm_timeout`` come from
``BaseDeployerSettings``), so a stack moves from ``local`` to ``zmd-local`` without touching
its pipelines. Importing this module imports no server code.
"""

from __future__ import annotations

from typing import cast

from zenml.deployers.base_deployer import (
    BaseDeployer,
    BaseDeployerConfig,
    BaseDeployerFlavor,
    BaseDeployerSettings,
)

FLAVOR_NAME = "zmd-local"
IMPLEMENTATION = "zenml_model_deployers.pipeline_deployer.deployer.ZmdLocalDeployer"


class ZmdLocalDeployerSettings(BaseDeployerSettings):
    """How a pipeline deployment of ``zmd-local`` is served.

    Attributes:
        port: the URL's port (None: the recorded one, else a free one in ``port_range``). Kept
            across redeploys, restarts and crashes.
        allocate_port_if_busy: when ``port`` is taken by another program, take a free one in
            ``port_range`` instead of failing (a deployment that already serves keeps its port).
        port_range: where a free port is looked for.
        address: the address the URL binds (a non-loopback address needs an auth key, ZenML's
            ``auth_key`` / ``generate_auth_key``, or ``allow_unauthenticated``).
        allow_unauthenticated: accept a non-loopback ``address`` without an auth key.
    """

    port: int | None = None
    allocate_port_if_busy: bool = True
    port_range: tuple[int, int] = (8000, 65535)
    address: str = "127.0.0.1"
    allow_unauthenticated: bool = False


class ZmdLocalDeployerConfig(BaseDeployerConfig, ZmdLocalDeployerSettings):
    """The component's config: the settings' defaults for every pipeline deployed with it."""

    @property
    def is_local(self) -> bool:
        """Serves on this machine.

        Returns:
            True.
        """
        return True


class ZmdLocalDeployerFlavor(BaseDeployerFlavor):
    """ZenML pipeline deployments on the local runtime of zenml-model-deployers."""

    @property
    def name(self) -> str:
        """The flavor's name.

        Returns:
            ``zmd-local``.
        """
        return FLAVOR_NAME

    @property
    def docs_url(self) -> str | None:
        """Where the flavor is documented.

        Returns:
            A URL.
        """
        return None

    @property
    def sdk_docs_url(self) -> str | None:
        """Where the SDK is documented.

        Returns:
            A URL.
        """
        return None

    @property
    def logo_url(self) -> str:
        """The dashboard's logo for it (ZenML's local deployer's).

        Returns:
            A URL.
        """
        return "https://public-flavor-logos.s3.eu-central-1.amazonaws.com/deployer/local.png"

    @property
    def config_class(self) -> type[ZmdLocalDeployerConfig]:
        """The component's config class.

        Returns:
            ZmdLocalDeployerConfig.
        """
        return ZmdLocalDeployerConfig

    @property
    def implementation_class(self) -> type[BaseDeployer]:
        """The deployer (imported only when a component is instantiated).

        Returns:
            ``deployer.ZmdLocalDeployer``.
        """
        from zenml.utils import source_utils

        # By its path, as ZenML loads flavors: the deployer imports this module.
        return cast("type[BaseDeployer]", source_utils.load(IMPLEMENTATION))

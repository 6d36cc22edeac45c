"""The `zmd-bentoml` flavor: cheap to import (no bentoml import here)."""

from __future__ import annotations

from typing import ClassVar

from zenml_model_deployers.deployer import BaseDeployerConfig, BaseDeployerFlavor

FLAVOR_NAME = "zmd-bentoml"


class BentoMLDeployerConfig(BaseDeployerConfig):
    """Settings of a `zmd-bentoml` model deployer component.

    The bento store is BentoML's own, in its home: `BENTOML_HOME` if set, else inside the
    ZenML config (`<config dir>/zmd/bentoml`).

    Attributes:
        default_timeout: seconds a deploy waits for the server to be ready.
    """


class BentoMLDeployerFlavor(BaseDeployerFlavor):
    """Serves BentoML 1.4 bentos with local `bentoml serve` processes behind a stable URL."""

    FLAVOR_NAME: ClassVar[str] = FLAVOR_NAME
    DISPLAY_NAME: ClassVar[str] = "BentoML (zenml-model-deployers)"
    LOGO: ClassVar[str] = "bentoml"
    CONFIG_CLASS: ClassVar[type[BaseDeployerConfig]] = BentoMLDeployerConfig
    IMPLEMENTATION: ClassVar[str] = "zenml_model_deployers.flavors.bentoml.deployer.BentoMLDeployer"

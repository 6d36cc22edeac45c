"""The `zmd-vllm` flavor: cheap to import (no vLLM, no openai import here)."""

from __future__ import annotations

from typing import ClassVar

from zenml_model_deployers.deployer import BaseDeployerConfig, BaseDeployerFlavor

FLAVOR_NAME = "zmd-vllm"


class VLLMDeployerConfig(BaseDeployerConfig):
    """Settings of a `zmd-vllm` model deployer component.

    Attributes:
        default_timeout: seconds a deploy waits for the server to be ready. Large models take
            minutes to download and load: the default is 20 minutes.
    """

    default_timeout: float = 1200.0


class VLLMDeployerFlavor(BaseDeployerFlavor):
    """Serves LLMs with local `vllm serve` processes (OpenAI API) behind a stable URL."""

    FLAVOR_NAME: ClassVar[str] = FLAVOR_NAME
    DISPLAY_NAME: ClassVar[str] = "vLLM (zenml-model-deployers)"
    LOGO: ClassVar[str] = "vllm"
    CONFIG_CLASS: ClassVar[type[BaseDeployerConfig]] = VLLMDeployerConfig
    IMPLEMENTATION: ClassVar[str] = "zenml_model_deployers.flavors.vllm.deployer.VLLMDeployer"

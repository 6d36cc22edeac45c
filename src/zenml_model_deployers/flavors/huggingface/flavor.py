"""The `zmd-huggingface` flavor: cheap to import (no huggingface_hub import here)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import ConfigDict, model_validator
from zenml.utils.secret_utils import SecretField

from zenml_model_deployers.deployer import BaseDeployerConfig, BaseDeployerFlavor
from zenml_model_deployers.secrets import reject_plain_secrets

FLAVOR_NAME = "zmd-huggingface"
TOKEN_HINT = (
    "store the token as a ZenML secret and pass its reference: "
    "`zenml secret create hf_token --token=<your token>`, then "
    "`zenml model-deployer register hf --flavor=zmd-huggingface --token='{{hf_token.token}}'`."
)


def reject_plain_token(data: Any, where: str) -> Any:
    """Refuses a plain token where only a secret reference may go.

    Args:
        data: the raw input of a model validator.
        where: what is being configured, for the message.

    Returns:
        The data, unchanged.
    """
    return reject_plain_secrets(data, where, {"token": "{{hf_token.token}}"}, TOKEN_HINT)


class HuggingFaceDeployerConfig(BaseDeployerConfig):
    """Settings of a `zmd-huggingface` model deployer component.

    Attributes:
        token: a ZenML secret reference to a Hugging Face token with write access to
            Inference Endpoints, e.g. ``{{hf_token.token}}``. A plain token is refused.
        namespace: the user or organisation owning the endpoints (default: the token's user).
        default_timeout: seconds a deploy waits for an endpoint to run when the step gives
            no ``timeout`` (endpoints on GPUs can take 10+ minutes to start).
    """

    # Pydantic would echo the rejected input (a plain token) in its error message.
    model_config = ConfigDict(hide_input_in_errors=True)

    token: str = SecretField()
    namespace: str = ""
    default_timeout: float = 1200.0

    @model_validator(mode="before")
    @classmethod
    def _token_is_a_reference(cls, data: Any) -> Any:
        return reject_plain_token(data, "zmd-huggingface model deployer")


class HuggingFaceDeployerFlavor(BaseDeployerFlavor):
    """Serves Hub models on Hugging Face Inference Endpoints, updated in place."""

    FLAVOR_NAME: ClassVar[str] = FLAVOR_NAME
    DISPLAY_NAME: ClassVar[str] = "Hugging Face Inference Endpoints (zenml-model-deployers)"
    LOGO: ClassVar[str] = "huggingface"
    CONFIG_CLASS: ClassVar[type[BaseDeployerConfig]] = HuggingFaceDeployerConfig
    IMPLEMENTATION: ClassVar[str] = (
        "zenml_model_deployers.flavors.huggingface.deployer.HuggingFaceDeployer"
    )

"""The `zmd-huggingface` flavor: cheap to import (no huggingface_hub import here)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import ConfigDict
from zenml.utils.secret_utils import SecretField

from zenml_model_deployers.deployer import BaseDeployerConfig, BaseDeployerFlavor
from zenml_model_deployers.secrets import references_only

FLAVOR_NAME = "zmd-huggingface"
TOKEN_HINT = (
    "store the token as a ZenML secret and pass its reference: "
    "`zenml secret create hf_token -i` (key `token`, your token at a prompt that does not echo), "
    "then "
    "`zenml model-deployer register hf --flavor=zmd-huggingface --token='{{hf_token.token}}'`."
)
# The credential fields, each with an example of the secret reference it takes.
TOKEN_FIELDS = {"token": "{{hf_token.token}}"}


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

    _token_is_a_reference = references_only(
        "zmd-huggingface model deployer", TOKEN_FIELDS, TOKEN_HINT
    )


class HuggingFaceDeployerFlavor(BaseDeployerFlavor):
    """Serves Hub models on Hugging Face Inference Endpoints, updated in place."""

    FLAVOR_NAME: ClassVar[str] = FLAVOR_NAME
    DISPLAY_NAME: ClassVar[str] = "Hugging Face Inference Endpoints (zenml-model-deployers)"
    LOGO: ClassVar[str] = "huggingface"
    CONFIG_CLASS: ClassVar[type[BaseDeployerConfig]] = HuggingFaceDeployerConfig
    IMPLEMENTATION: ClassVar[str] = (
        "zenml_model_deployers.flavors.huggingface.deployer.HuggingFaceDeployer"
    )

"""The deployment config of `zmd-huggingface`: which Hub model an Inference Endpoint serves.

Cheap to import (no huggingface_hub): ZenML loads it to read stored services.
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

from pydantic import ConfigDict, Field, field_validator, model_validator

from zenml_model_deployers import secrets
from zenml_model_deployers.config import DeploymentConfig
from zenml_model_deployers.flavors.huggingface.flavor import TOKEN_FIELDS, TOKEN_HINT
from zenml_model_deployers.secrets import references_only

ENDPOINT_TYPES = ("public", "authenticated", "private")
# Settings Inference Endpoints cannot change on an existing endpoint.
NOT_UPDATABLE = ("vendor", "region", "endpoint_type")


def endpoint_name_for(deployment_name: str) -> str:
    """The Inference Endpoint name of a deployment (Hugging Face allows 32 characters).

    Args:
        deployment_name: a DNS-safe deployment name (up to 63 characters).

    Returns:
        The name itself when it fits, else a prefix plus a digest of the full name.
    """
    if len(deployment_name) <= 32:
        return deployment_name
    digest = hashlib.sha256(deployment_name.encode()).hexdigest()[:8]
    return f"{deployment_name[:23].rstrip('-')}-{digest}"


class HuggingFaceDeploymentConfig(DeploymentConfig):
    """How to serve a Hub model on an Inference Endpoint.

    Attributes:
        model_uri: the Hub repository to serve, e.g. ``distilbert/distilbert-base-uncased``.
        revision: the repository revision (pin a commit sha: a branch name compares as text,
            so a new commit on the branch is not a new revision).
        task: e.g. ``text-classification``; also picks the client call of ``predict``.
        framework: e.g. ``pytorch`` or ``custom``.
        accelerator: e.g. ``cpu`` or ``gpu``.
        instance_size: e.g. ``x2``.
        instance_type: e.g. ``intel-icl`` or ``nvidia-a10g``.
        region: e.g. ``us-east-1`` (fixed at creation).
        vendor: e.g. ``aws`` (fixed at creation).
        min_replica: replicas kept running; 0 allows scale-to-zero.
        max_replica: replicas at most.
        scale_to_zero_timeout: idle minutes before scaling to zero (needs ``min_replica=0``).
        endpoint_type: ``public``, ``authenticated`` or ``private`` (fixed at creation).
        custom_image: a container image dict (see ``huggingface_hub``'s ``custom_image``).
        namespace: where the endpoint lives (default: the component's, else the token's user).
        token: secret reference to the token (default: the component's); never a value.
        env: the container's environment; values that are secret references are sent as
            Inference Endpoints *secrets*, resolved at call time.
    """

    # Where the endpoint lives and the credentials reference say how to reach it, not what
    # it serves: changing them is not a new revision.
    PROVENANCE_FIELDS: ClassVar[frozenset[str]] = DeploymentConfig.PROVENANCE_FIELDS | {
        "namespace",
        "token",
    }
    FORMER_SOURCES: ClassVar[tuple[str, ...]] = (
        "zenml_model_deployers.flavors.huggingface.service.HuggingFaceDeploymentConfig",
    )
    model_config = ConfigDict(hide_input_in_errors=True)

    health_path: str = "/health"
    revision: str | None = None
    task: str | None = None
    framework: str = "pytorch"
    accelerator: str = "cpu"
    instance_size: str = "x2"
    instance_type: str = "intel-icl"
    region: str = "us-east-1"
    vendor: str = "aws"
    min_replica: int = Field(default=1, ge=0)
    max_replica: int = Field(default=1, ge=1)
    scale_to_zero_timeout: int | None = Field(default=None, ge=1)
    endpoint_type: str = "authenticated"
    custom_image: dict[str, Any] | None = None
    namespace: str = ""
    token: str | None = None

    _token_is_a_reference = references_only("zmd-huggingface deployment", TOKEN_FIELDS, TOKEN_HINT)

    @field_validator("endpoint_type")
    @classmethod
    def _known_type(cls, v: str) -> str:
        if v not in ENDPOINT_TYPES:
            raise ValueError(f"endpoint_type {v!r} must be one of {', '.join(ENDPOINT_TYPES)}.")
        return v

    @model_validator(mode="after")
    def _replicas(self) -> HuggingFaceDeploymentConfig:
        if self.min_replica > self.max_replica:
            raise ValueError(
                f"min_replica ({self.min_replica}) is above max_replica ({self.max_replica})."
            )
        if self.min_replica == 0 and self.scale_to_zero_timeout is None:
            raise ValueError(
                "min_replica=0 lets the endpoint scale to zero: also set "
                "scale_to_zero_timeout (idle minutes before it does, e.g. 15)."
            )
        return self

    @property
    def repository(self) -> str:
        """The Hub repository (``model_uri``)."""
        return self.model_uri

    def plain_env(self) -> dict[str, str]:
        """The environment variables that are not secret references.

        Returns:
            A dict.
        """
        return {k: v for k, v in self.env.items() if not secrets.is_secret_reference(v)}

    def resolved_secrets(self) -> dict[str, str]:
        """The environment variables that are secret references, resolved (call time only).

        Returns:
            A dict of secret values: never log or store it.
        """
        return {
            k: secrets.resolve(v) for k, v in self.env.items() if secrets.is_secret_reference(v)
        }

    def model_label(self) -> str:
        """``repository@revision`` for messages.

        Returns:
            A string.
        """
        return f"{self.model_uri}@{self.revision or 'main'}"

    def moved_settings(self, previous: HuggingFaceDeploymentConfig) -> list[str]:
        """The settings Inference Endpoints cannot change in place that differ from
        ``previous`` (a new endpoint is needed for them).

        Args:
            previous: the revision the endpoint serves.

        Returns:
            Their names (empty: an update in place can serve this config).
        """
        return [f for f in NOT_UPDATABLE if getattr(previous, f) != getattr(self, f)]

"""The deployment config of `zmd-bentoml`: which bento to serve and how (re-exported from
service.py, where ZenML recorded its source path)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from zenml_model_deployers.local.service import LocalDeploymentConfig


class BentoMLDeploymentConfig(LocalDeploymentConfig):
    """How to serve a bento.

    Attributes:
        model_uri: the bento's tag in the local BentoML store (`name:version`).
        api: the API that `predict()` and the recorded URL use (default: the bento's first).
        args: bento arguments (`bentoml serve --arg key=value`).
        containerize: serve the bento's OCI image (`bentoml containerize`) in a local Docker
            engine instead of a process from this environment.
        image: the image to run when containerized (default: built from the bento).
        health_path: BentoML's own readiness endpoint.
    """

    FORMER_SOURCES: ClassVar[tuple[str, ...]] = (
        "zenml_model_deployers.flavors.bentoml.service.BentoMLDeploymentConfig",
    )

    api: str | None = None
    args: dict[str, str] = Field(default_factory=dict)
    containerize: bool = False
    image: str | None = None
    health_path: str = "/readyz"

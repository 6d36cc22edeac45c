"""The deployment config of `zmd-bentoml`: which bento to serve and how (re-exported from
service.py, where ZenML recorded its source path)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from zenml_model_deployers.errors import ConfigurationError
from zenml_model_deployers.local.config import DirectDataPathConfig


class BentoMLDeploymentConfig(DirectDataPathConfig):
    """How to serve a bento.

    Attributes:
        model_uri: the bento's tag in the local BentoML store (`name:version`).
        api: the API that `predict()` and the recorded URL use (default: the bento's first).
        args: bento arguments (`bentoml serve --arg key=value`).
        containerize: serve the bento's OCI image (`bentoml containerize`) in a local Docker
            engine instead of a process from this environment.
        image: the image to run when containerized (default: built from the bento).
        health_path: BentoML's own readiness endpoint.
        data_path: ``"auto"`` (default), ``"relay"`` or ``"direct"``: see
            ``local.config.DirectDataPathConfig``; a containerized bento keeps the relay.
    """

    FORMER_SOURCES: ClassVar[tuple[str, ...]] = (
        "zenml_model_deployers.flavors.bentoml.service.BentoMLDeploymentConfig",
    )

    api: str | None = None
    args: dict[str, str] = Field(default_factory=dict)
    containerize: bool = False
    image: str | None = None
    health_path: str = "/readyz"

    def __init__(self, **data: Any) -> None:
        """Refuses the direct data path for a containerized bento (Docker maps its port).

        Args:
            **data: fields.

        Raises:
            ConfigurationError: ``data_path="direct"`` with ``containerize=True``.
        """
        super().__init__(**data)
        if self.data_path == "direct" and self.containerize:
            raise ConfigurationError(
                f"Deployment '{self.deployment_name}' asks for data_path='direct' and a "
                "containerized bento: the container's server listens on Docker's port "
                "mapping and cannot take the front's socket.",
                deployment_name=self.deployment_name,
                hint="drop data_path='direct' (the default 'auto' keeps the relay in the data "
                "path of a containerized bento), or set containerize=False to serve the bento "
                "as a process.",
            )

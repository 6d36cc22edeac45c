"""ZenML's pipeline server as a revision of the local runtime.

``PipelineServerService`` is a ``LocalProcessService`` like the local model flavors: its
``server_command`` is the command ZenML's own ``local`` deployer runs
(``python -m zenml.deployers.server.app --deployment_id …``), on a private port behind the
deployment's front. Everything else (start → verify on the health route → switch → drain,
supervision, the API key in the front, metrics, logs) is the runtime's.

It lives in ZenML's deployment record, not in the service store: ``deployer.py`` keeps its
config and status in the deployment's metadata and builds the service from it per call.
The environment and secrets ZenML hands a deployer are private attributes: never stored;
the secrets reach the server's environment and, for restarts, the front's memory only.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import PrivateAttr
from zenml.models.v2.misc.service import ServiceType

from zenml_model_deployers.local.config import LocalDeploymentConfig
from zenml_model_deployers.local.process import python_executable
from zenml_model_deployers.local.service import LocalProcessService
from zenml_model_deployers.pipeline_deployer.flavor import FLAVOR_NAME

# The variable that tells ZenML where the pipeline's code lives (the deploying process's
# source root): the server runs in the deployment's private folder, not in the project.
SOURCE_ROOT_ENV = "ZENML_CUSTOM_SOURCE_ROOT"


class PipelineServerConfig(LocalDeploymentConfig):
    """One revision of a pipeline deployment: the ZenML deployment and the snapshot it serves.

    Attributes:
        deployment_id: the ZenML deployment (the server loads it, and its snapshot, from the
            store).
        snapshot_id: the snapshot this revision serves (a new snapshot is a new revision).
        invoke_path: the server's invoke route (from the snapshot's deployment settings).
    """

    deployment_id: str = ""
    snapshot_id: str = ""
    health_path: str = "/health"
    invoke_path: str = "/invoke"


class PipelineServerService(LocalProcessService):
    """A ZenML pipeline server behind the local runtime's front."""

    SERVICE_TYPE: ClassVar[ServiceType] = ServiceType(
        name="zmd-local-pipeline-deployment",
        type="pipeline-deployment",
        flavor=FLAVOR_NAME,
        description="ZenML pipeline server behind a zmd front",
    )
    FLAVOR: ClassVar[str] = FLAVOR_NAME
    # ZenML's store, config and source-root variables survive a restart by the supervisor.
    RESTART_INHERITED_ENV: ClassVar[tuple[str, ...]] = ("ZENML_",)

    config: PipelineServerConfig

    # What ZenML hands the deployer for this provision (get_config_environment_vars): plain
    # variables, secrets (e.g. a ZenML server's API token), the deployment's auth key.
    _zenml_env: dict[str, str] = PrivateAttr(default_factory=dict)
    _zenml_secrets: dict[str, str] = PrivateAttr(default_factory=dict)
    _auth_key: str | None = PrivateAttr(default=None)

    def hand_over(
        self, environment: dict[str, str], secrets: dict[str, str], auth_key: str | None
    ) -> None:
        """Gives the service what ZenML passes a deployer for one provision.

        Args:
            environment: variables for the server (ZenML's store and active stack/project).
            secrets: secret variables for the server.
            auth_key: the deployment's key (None: open).
        """
        self._zenml_env = dict(environment)
        self._zenml_secrets = dict(secrets)
        self._auth_key = auth_key

    def server_command(self, port: int) -> list[str]:
        """ZenML's pipeline server for the deployment, as its ``local`` deployer runs it
        (without ``--log_file``, which would make it redirect its own output: the runtime
        keeps the log).

        Args:
            port: private port.

        Returns:
            argv.
        """
        return [
            python_executable(),
            "-m",
            "zenml.deployers.server.app",
            "--deployment_id",
            self.config.deployment_id,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]

    def server_env(self) -> dict[str, str]:
        """This process's environment with ZenML's variables and secrets, as ZenML's
        ``local`` deployer builds it, and the pipeline's source root.

        Returns:
            The environment (contains secrets: never log it).
        """
        from zenml.utils import source_utils

        env = super().server_env()
        env.setdefault(SOURCE_ROOT_ENV, source_utils.get_source_root())
        env.update(self._zenml_env)
        env.update(self._zenml_secrets)
        return env

    def secret_values(self) -> list[str]:
        """ZenML's secret variables: named in the restart spec, kept in the front's memory.

        Returns:
            Their values.
        """
        return [v for v in self._zenml_secrets.values() if v]

    def api_key_value(self) -> str | None:
        """The deployment's auth key (ZenML's ``auth_key``), which the front enforces.

        Returns:
            The key, or None.
        """
        return self._auth_key

    def open_paths(self) -> tuple[str, ...]:
        """The health route stays open: ZenML checks it without the key (and its own server
        does not require it there).

        Returns:
            The health path.
        """
        return (self.config.health_path,)

    def predict_path(self) -> str:
        """The invoke route.

        Returns:
            A URL path.
        """
        return self.config.invoke_path

    def format_request(self, data: Any) -> tuple[dict[str, str], bytes]:
        """An invocation with ``data`` as the pipeline's parameters.

        Args:
            data: the parameters.

        Returns:
            (headers, body).
        """
        import json

        return {"Content-Type": "application/json"}, json.dumps({"parameters": data}).encode()

    def parse_response(self, body: bytes) -> Any:
        """The pipeline's outputs.

        Args:
            body: the server's JSON answer.

        Returns:
            Its ``outputs``.
        """
        import json

        return json.loads(body).get("outputs")

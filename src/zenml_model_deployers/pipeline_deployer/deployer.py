"""``ZmdLocalDeployer``: ZenML's Deployer hooks mapped onto ``PipelineServerService`` (thin:
every start, switch, drain, restart and log read is the ``local/`` runtime's).

- ``do_provision_deployment``: a new snapshot is a new revision: its server starts beside the
  serving one, answers its health route, the front switches, the old one drains. The same
  snapshot while it serves changes nothing (a changed auth key reaches the front). A failure
  leaves the old revision serving, puts its snapshot back on the deployment (so that a
  restart by the supervisor serves it, not the failed one), records the error with the
  server's log tail in the deployment's metadata (``last_error``) and raises it.
- ``do_get_deployment_state``: the runtime's state (processes and the supervisor's record),
  never "a pid exists": RUNNING, PENDING while the supervisor restarts a crashed server,
  ERROR with the reason.
- ``do_get_deployment_state_logs``: the serving server's log (secrets scrubbed).
- ``do_deprovision_deployment``: the front and every server end, the folder goes.

The service's config and status live in the deployment's metadata (``zmd``), with a few
readable fields beside them (``url``, ``revision``, ``restarts``, ``server_pid``,
``front_pid``, ``log_file``, ``snapshot_id``, ``message``, ``last_error``).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any, cast
from uuid import UUID

from zenml.config import DeploymentDefaultEndpoints
from zenml.config.base_settings import BaseSettings
from zenml.deployers.base_deployer import BaseDeployer
from zenml.deployers.exceptions import (
    DeploymentLogsNotFoundError,
    DeploymentNotFoundError,
    DeploymentProvisionError,
)
from zenml.enums import DeploymentStatus, ServiceState
from zenml.models import DeploymentOperationalState, DeploymentResponse, DeploymentUpdate

from zenml_model_deployers.config import derive_deployment_name
from zenml_model_deployers.errors import DeploymentError
from zenml_model_deployers.local.config import LocalDeploymentStatus, is_loopback
from zenml_model_deployers.local.launch import port_is_free
from zenml_model_deployers.lock import deployment_lock
from zenml_model_deployers.pipeline_deployer.flavor import (
    FLAVOR_NAME,
    ZmdLocalDeployerConfig,
    ZmdLocalDeployerSettings,
)
from zenml_model_deployers.pipeline_deployer.service import (
    PipelineServerConfig,
    PipelineServerService,
)

if TYPE_CHECKING:
    from zenml.stack import Stack

META_KEY = "zmd"

_STATES = {
    ServiceState.ACTIVE: DeploymentStatus.RUNNING,
    ServiceState.PENDING_STARTUP: DeploymentStatus.PENDING,
    ServiceState.ERROR: DeploymentStatus.ERROR,
}


def runtime_name(deployment: DeploymentResponse) -> str:
    """The local runtime's name of a ZenML deployment (a DNS label: its folder, its lock):
    the deployment's name made DNS-safe, and the start of its id (names can be reused after a
    delete; ids cannot).

    Args:
        deployment: the deployment.

    Returns:
        e.g. ``my-pipeline-3f2a9c1d``.
    """
    base = derive_deployment_name(deployment.name)[:50].strip("-") or "deployment"
    return f"{base}-{deployment.id.hex[:8]}"


def service_of(deployment: DeploymentResponse) -> PipelineServerService | None:
    """The deployment's service, as its metadata records it.

    Args:
        deployment: the deployment.

    Returns:
        The service, or None if nothing was provisioned.
    """
    recorded = (deployment.deployment_metadata or {}).get(META_KEY)
    if not recorded:
        return None
    return PipelineServerService(
        uuid=deployment.id,
        config=PipelineServerConfig.model_validate(recorded["config"]),
        status=LocalDeploymentStatus.model_validate(recorded["status"]),
    )


def metadata_of(svc: PipelineServerService, **extra: Any) -> dict[str, Any]:
    """The deployment's metadata for a service: readable fields and the service itself.

    Args:
        svc: the service.
        **extra: further fields (``message``, ``last_error``).

    Returns:
        A JSON-able dict.
    """
    st = svc.status
    meta: dict[str, Any] = {
        "url": st.url,
        "revision": st.revision,
        "restarts": st.restarts,
        "snapshot_id": svc.config.snapshot_id,
        "server_pid": st.server.pid if st.server else None,
        "front_pid": st.relay.pid if st.relay else None,
        "log_file": st.log_path,
        "metrics_url": svc.metrics_url,
        **{k: v for k, v in extra.items() if v},
        META_KEY: {
            "config": svc.config.model_dump(mode="json"),
            "status": st.model_dump(mode="json"),
        },
    }
    return meta


class ZmdLocalDeployer(BaseDeployer):
    """Pipeline deployments on the local runtime of zenml-model-deployers."""

    @property
    def settings_class(self) -> type[BaseSettings] | None:
        """The settings a pipeline may set for this deployer.

        Returns:
            ZmdLocalDeployerSettings.
        """
        return ZmdLocalDeployerSettings

    @property
    def config(self) -> ZmdLocalDeployerConfig:
        """The component's config.

        Returns:
            The config.
        """
        return cast(ZmdLocalDeployerConfig, self._config)

    # ----------------------------------------------------------------- helpers
    def _revision_config(
        self,
        deployment: DeploymentResponse,
        settings: ZmdLocalDeployerSettings,
        status: LocalDeploymentStatus | None,
    ) -> PipelineServerConfig:
        """The revision that serves the deployment's snapshot with these settings."""
        snapshot = deployment.snapshot
        assert snapshot is not None, "the deployment has no snapshot"
        ds = snapshot.pipeline_configuration.deployment_settings
        if DeploymentDefaultEndpoints.HEALTH not in ds.include_default_endpoints:
            raise DeploymentProvisionError(
                f"Deployment '{deployment.name}': zmd-local switches to a new server only once "
                "it answers its health route, and this pipeline's deployment settings leave "
                "that route out: include DeploymentDefaultEndpoints.HEALTH in "
                "`include_default_endpoints`."
            )
        if not (
            is_loopback(settings.address) or deployment.auth_key or settings.allow_unauthenticated
        ):
            raise DeploymentProvisionError(
                f"address {settings.address!r} exposes deployment '{deployment.name}' beyond "
                "this machine without an auth key: anyone who can reach it could run the "
                "pipeline. Set the deployer setting `generate_auth_key=True` (or `auth_key`), "
                "bind to 127.0.0.1, or set `allow_unauthenticated=True` to accept that risk."
            )
        api = f"{ds.root_url_path}{ds.api_url_path}"
        return PipelineServerConfig(
            deployment_name=runtime_name(deployment),
            model_name=deployment.name,
            model_uri=f"zenml-snapshot://{snapshot.id}",
            deployment_id=str(deployment.id),
            snapshot_id=str(snapshot.id),
            health_path=f"{api}{ds.health_url_path}" or "/",
            invoke_path=f"{api}{ds.invoke_url_path}" or "/",
            host=settings.address,
            port=self._port(deployment, settings, status),
            # Checked above: the front enforces ZenML's auth key, not a secret reference.
            allow_unauthenticated=True,
        )

    @staticmethod
    def _port(
        deployment: DeploymentResponse,
        settings: ZmdLocalDeployerSettings,
        status: LocalDeploymentStatus | None,
    ) -> int:
        """The URL's port: the pinned one if free (or already ours), else the recorded one,
        else a free one in the range (as ZenML's ``local`` deployer allocates)."""
        from zenml.utils.networking_utils import lookup_preferred_or_free_port

        recorded = status.public_port if status else None
        wanted = settings.port
        if wanted is not None and (wanted == recorded or port_is_free(settings.address, wanted)):
            return wanted
        if wanted is not None and not settings.allocate_port_if_busy:
            raise DeploymentProvisionError(
                f"Port {wanted} of deployment '{deployment.name}' is in use on "
                f"{settings.address}: free it, choose another `port`, or set "
                "`allocate_port_if_busy=True`."
            )
        if recorded:
            return recorded
        try:
            return int(
                lookup_preferred_or_free_port(
                    preferred_ports=[],
                    allocate_port_if_busy=True,
                    range=settings.port_range,
                    address=settings.address,
                )
            )
        except OSError as e:
            raise DeploymentProvisionError(str(e)) from e

    def _state(self, svc: PipelineServerService, **extra: Any) -> DeploymentOperationalState:
        """The operational state the runtime reports for the service."""
        state, message = svc.check_status()
        status = _STATES.get(state, DeploymentStatus.ERROR)
        if state == ServiceState.INACTIVE:
            message = (
                "neither the front nor the server runs (stopped, or after a reboot): "
                "`zenml deployment provision` starts it again"
            )
        return DeploymentOperationalState(
            status=status,
            url=svc.status.url,
            metadata=metadata_of(svc, message=message, **extra),
        )

    # ----------------------------------------------------------------- ZenML's hooks
    def do_provision_deployment(
        self,
        deployment: DeploymentResponse,
        stack: Stack,
        environment: dict[str, str],
        secrets: dict[str, str],
        timeout: int,
    ) -> DeploymentOperationalState:
        """Serves the deployment's snapshot as the deployment's revision (see the module
        docstring): returns once the new server answers on the deployment's URL.

        Args:
            deployment: the deployment (its snapshot is the one to serve).
            stack: the stack (unused: the server runs here).
            environment: ZenML's variables for the server.
            secrets: ZenML's secret variables for the server (never written to disk).
            timeout: seconds until the new server must answer.

        Returns:
            RUNNING, with the URL.

        Raises:
            DeploymentProvisionError: the new server did not become ready; the previous
                revision, if any, still serves.
        """
        assert deployment.snapshot is not None, "the deployment has no snapshot"
        settings = cast(ZmdLocalDeployerSettings, self.get_settings(deployment.snapshot))
        previous = service_of(deployment)
        name = runtime_name(deployment)
        with deployment_lock(FLAVOR_NAME, name, float(timeout)):
            status = previous.status if previous else LocalDeploymentStatus()
            config = self._revision_config(deployment, settings, status)
            svc = PipelineServerService(uuid=deployment.id, config=config, status=status)
            svc.hand_over(environment, secrets, deployment.auth_key)
            if previous is not None and previous.config.config_hash() == config.config_hash():
                state, _ = svc.check_status()
                if state == ServiceState.ACTIVE:
                    if svc.status.server_port is not None:
                        svc.front.switch(svc.status.server_port)  # the auth key may be new
                    return self._state(svc)
            try:
                svc.provision_revision(float(timeout))
            except DeploymentError as e:
                self._record_failure(deployment, previous, svc, e)
                raise DeploymentProvisionError(str(e)) from e
            return self._state(svc)

    def _record_failure(
        self,
        deployment: DeploymentResponse,
        previous: PipelineServerService | None,
        svc: PipelineServerService,
        error: DeploymentError,
    ) -> None:
        """After a failed provision: the error and the processes that still serve go into the
        metadata, and the serving revision's snapshot back onto the deployment."""
        from zenml.client import Client

        if previous is None:
            # Nothing serves (the runtime ended what it started): only the error stays.
            update = DeploymentUpdate(deployment_metadata={"last_error": str(error)})
        else:
            # The status the runtime left is what still serves: the previous revision.
            previous.status = svc.status
            update = DeploymentUpdate(
                snapshot_id=UUID(previous.config.snapshot_id),
                deployment_metadata=metadata_of(previous, last_error=str(error)),
            )
        Client().zen_store.update_deployment(deployment.id, update)

    def do_get_deployment_state(self, deployment: DeploymentResponse) -> DeploymentOperationalState:
        """The deployment's state, read from its processes and its supervisor.

        Args:
            deployment: the deployment.

        Returns:
            RUNNING, PENDING (a crashed server being restarted) or ERROR (with ``message``);
            ABSENT when nothing was provisioned.
        """
        svc = service_of(deployment)
        if svc is None:
            return DeploymentOperationalState(status=DeploymentStatus.ABSENT)
        last_error = (deployment.deployment_metadata or {}).get("last_error")
        return self._state(svc, last_error=last_error)

    def do_get_deployment_state_logs(
        self,
        deployment: DeploymentResponse,
        follow: bool = False,
        tail: int | None = None,
    ) -> Generator[str, bool, None]:
        """The serving server's log lines (secret values scrubbed).

        Args:
            deployment: the deployment.
            follow: keep yielding new lines while the server runs.
            tail: only the last N lines.

        Yields:
            Lines.

        Raises:
            DeploymentLogsNotFoundError: nothing was provisioned, or its log is gone.
        """
        svc = service_of(deployment)
        if svc is None or not svc.status.log_path:
            raise DeploymentLogsNotFoundError(
                f"No logs of deployment '{deployment.name}': it was never provisioned."
            )
        from pathlib import Path

        if not Path(svc.status.log_path).is_file():
            raise DeploymentLogsNotFoundError(
                f"The log of deployment '{deployment.name}' is gone ({svc.status.log_path})."
            )
        for line in svc.get_logs(follow=follow, tail=tail):
            yield line.rstrip("\n")

    def do_deprovision_deployment(
        self, deployment: DeploymentResponse, timeout: int
    ) -> DeploymentOperationalState | None:
        """Ends the front and every server of the deployment and removes its folder.

        Args:
            deployment: the deployment.
            timeout: seconds for the servers to stop.

        Returns:
            None: nothing is left.

        Raises:
            DeploymentNotFoundError: nothing was provisioned.
        """
        svc = service_of(deployment)
        if svc is None:
            raise DeploymentNotFoundError(
                f"Deployment '{deployment.name}' has no zmd-local processes."
            )
        with deployment_lock(FLAVOR_NAME, svc.deployment_name, float(timeout)):
            svc.delete_backend(float(timeout))
        return None

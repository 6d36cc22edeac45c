"""ZenMLDeployerAPI: ZenML's model-deployer API, mapped onto our lifecycle.

What ZenML's CLI (``zenml model-deployer models ...``), dashboard, docs and the seed's
snippets call on a model deployer: ``deploy_model``, ``find_model_server``,
``{start,stop,delete}_model_server``, ``get_model_server_logs``, ``get_model_server_info``
and the ``perform_*`` hooks of ZenML's base path. Each is a thin mapping onto the lifecycle
of ``deployer.BaseDeployer``, which subclasses this class and provides the abstract methods
below; nothing here decides anything (``tests/test_seed_api.py`` runs ZenML's own snippets).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Generator
from typing import Any, ClassVar, cast
from uuid import UUID

from zenml.enums import ServiceState
from zenml.logger import get_logger
from zenml.model_deployers.base_model_deployer import BaseModelDeployer
from zenml.models.v2.misc.service import ServiceType
from zenml.services.service import BaseService, ServiceConfig

from zenml_model_deployers import store
from zenml_model_deployers.config import DeploymentConfig, DeployPolicy
from zenml_model_deployers.errors import ConfigurationError, DeploymentNotFoundError
from zenml_model_deployers.service import DeploymentService, DeploymentStatus

logger = get_logger(__name__)


class ZenMLDeployerAPI(BaseModelDeployer):
    """ZenML's ``BaseModelDeployer`` interface over this package's lifecycle.

    A flavor never subclasses this directly: it subclasses ``BaseDeployer``.
    """

    SERVICE_CLASS: ClassVar[type[DeploymentService]]

    # ----------------------------------------------------------------- what BaseDeployer provides
    @classmethod
    def flavor_name(cls) -> str:
        """The flavor name (`zmd-...`)."""
        return cls.SERVICE_CLASS.FLAVOR

    @abstractmethod
    def _config_of(self, config: dict[str, Any] | ServiceConfig) -> DeploymentConfig:
        """A config (object or fields) as this flavor's config; ConfigurationError if not."""

    @abstractmethod
    def deploy(
        self,
        config: DeploymentConfig,
        policy: DeployPolicy | str = ...,
        timeout: float | None = ...,
    ) -> DeploymentService:
        """See ``BaseDeployer.deploy``."""

    @abstractmethod
    def start(self, service: DeploymentService, timeout: float | None = ...) -> DeploymentService:
        """See ``BaseDeployer.start``."""

    @abstractmethod
    def stop(self, service: DeploymentService, timeout: float = ...) -> DeploymentService:
        """See ``BaseDeployer.stop``."""

    @abstractmethod
    def delete(self, service: DeploymentService, timeout: float = ...) -> None:
        """See ``BaseDeployer.delete``."""

    # ----------------------------------------------------------------- ZenML's API
    def find_model_server(
        self,
        config: dict[str, Any] | ServiceConfig | None = None,
        running: bool | None = None,
        service_uuid: UUID | None = None,
        pipeline_name: str | None = None,
        pipeline_step_name: str | None = None,
        service_name: str | None = None,
        model_name: str | None = None,
        model_version: str | None = None,
        service_type: ServiceType | None = None,
        type: str | None = None,
        flavor: str | None = None,
        pipeline_run_id: str | None = None,
        deployment_name: str | None = None,
    ) -> list[BaseService]:
        """This flavor's deployments that match every given filter, newest first.

        ZenML's implementation matches ``model_name`` against its model registry and deletes
        rows it cannot load; this one selects on the deployments' own recorded fields and
        never writes:

        - ``model_name``, ``pipeline_name``, ``pipeline_step_name``, ``pipeline_run_id``,
          ``model_version``, ``deployment_name``, ``service_name``: equal to the serving
          revision's config field;
        - ``config``: a config (or its dict) of this flavor; matches the deployment whose
          serving revision has the same config hash;
        - ``service_uuid``; ``flavor`` / ``type`` / ``service_type``: this flavor's or nothing;
        - ``running=True``: only deployments that serve now (state read from the backend, as
          every returned service's status is); False or None: no filter, as in ZenML (whose
          ``zenml model-deployer models list`` passes False without ``--running``).

        Args:
            config: a config of this flavor (object or dict).
            running: True: only running deployments.
            service_uuid: the service id.
            pipeline_name: the pipeline that deployed it.
            pipeline_step_name: the step that deployed it.
            service_name: the service name (``zenml-<deployment name>``).
            model_name: the deployed model's name.
            model_version: the config's model version.
            service_type: ZenML service type (its flavor must be this one).
            type: ZenML service type name (``model-serving``).
            flavor: the flavor (must be this one).
            pipeline_run_id: the run that deployed the serving revision.
            deployment_name: the deployment's name.

        Returns:
            The matching services.

        Raises:
            ConfigurationError: ``config`` is not a valid config of this flavor.
        """
        if flavor is not None and flavor != self.flavor_name():
            return []
        if service_type is not None and service_type.flavor != self.flavor_name():
            return []
        if type is not None and type != self.SERVICE_CLASS.SERVICE_TYPE.type:
            return []
        want_hash = None
        if config is not None:
            want_hash = self._config_of(config).config_hash()
        wanted = {
            "pipeline_name": pipeline_name,
            "pipeline_step_name": pipeline_step_name,
            "model_name": model_name,
            "model_version": model_version,
            "pipeline_run_id": None if pipeline_run_id is None else str(pipeline_run_id),
            "deployment_name": deployment_name,
            "service_name": service_name,
        }
        wanted = {k: v for k, v in wanted.items() if v is not None}
        out: list[BaseService] = []
        for svc in store.list_services(self.flavor_name(), service_uuid):
            if any(getattr(svc.config, k) != v for k, v in wanted.items()):
                continue
            if want_hash is not None and svc.status.config_hash != want_hash:
                continue
            svc.update_status()
            if running and svc.status.state != ServiceState.ACTIVE:
                continue
            out.append(svc)
        return out

    def deploy_model(
        self,
        config: ServiceConfig | None = None,
        service_type: ServiceType | None = None,
        replace: bool = False,
        continuous_deployment_mode: bool = False,
        timeout: int = 300,
        **settings: Any,
    ) -> BaseService:
        """ZenML's entry point, mapped onto :meth:`deploy` (update in place by default).

        Takes a config of this flavor, or (as ZenML's docs call it) the config's fields as
        keyword arguments: ``deploy_model(model_name=..., model_uri=..., pipeline_name=...,
        pipeline_step_name=..., <serving settings>)``.

        Args:
            config: a DeploymentConfig of this flavor.
            service_type: ignored (the flavor knows its type).
            replace: delete then create instead of updating in place.
            continuous_deployment_mode: ignored: updates always roll out safely.
            timeout: seconds.
            **settings: the config's fields, when no `config` is given.

        Returns:
            The service.

        Raises:
            ConfigurationError: neither or both of a config and fields, or an invalid config.
        """
        if config is None:
            if not settings:
                raise ConfigurationError("Give a deployment config or its fields.")
            config = self._config_of(settings)
        elif settings:
            raise ConfigurationError(
                f"Give a config or its fields, not both (got {', '.join(sorted(settings))})."
            )
        if not isinstance(config, DeploymentConfig):
            raise ConfigurationError(f"{type(config).__name__} is not a DeploymentConfig.")
        policy = DeployPolicy.REPLACE if replace else DeployPolicy.UPDATE
        return self.deploy(config, policy=policy, timeout=timeout)

    def perform_deploy_model(
        self, id: UUID, config: ServiceConfig, timeout: int = 300
    ) -> BaseService:
        """Creates the service with ZenML's id (only used through ZenML's base path).

        Args:
            id: service id.
            config: the config.
            timeout: seconds.

        Returns:
            The service.
        """
        status_cls = cast(
            type[DeploymentStatus], self.SERVICE_CLASS.model_fields["status"].annotation
        )
        service = self.SERVICE_CLASS(uuid=id, config=config, status=status_cls())
        service.provision_revision(timeout)
        return service

    def perform_stop_model(
        self, service: BaseService, timeout: int = 30, force: bool = False
    ) -> BaseService:
        """ZenML hook: see :meth:`stop`."""
        assert isinstance(service, DeploymentService)
        service.stop_backend(timeout)
        return service

    def perform_start_model(self, service: BaseService, timeout: int = 300) -> BaseService:
        """ZenML hook: see :meth:`start`."""
        assert isinstance(service, DeploymentService)
        service.start_backend(timeout)
        return service

    def perform_delete_model(
        self, service: BaseService, timeout: int = 30, force: bool = False
    ) -> None:
        """ZenML hook: see :meth:`delete`."""
        assert isinstance(service, DeploymentService)
        service.delete_backend(timeout)

    def stop_model_server(
        self, uuid: UUID | BaseService, timeout: int = 30, force: bool = False
    ) -> None:
        """Stops a deployment by service id or service object (ZenML API).

        Args:
            uuid: service id, or the service (as ZenML's docs pass it).
            timeout: seconds.
            force: ignored.
        """
        self.stop(self.get_service(_service_id(uuid)), timeout)

    def start_model_server(self, uuid: UUID | BaseService, timeout: int = 300) -> None:
        """Starts a deployment by service id or service object (ZenML API).

        Args:
            uuid: service id, or the service (as ZenML's docs pass it).
            timeout: seconds.
        """
        self.start(self.get_service(_service_id(uuid)), timeout)

    def delete_model_server(
        self, uuid: UUID | BaseService, timeout: int = 30, force: bool = False
    ) -> None:
        """Deletes a deployment by service id or service object (ZenML API). Idempotent.

        A service id that names no deployment (any more) is a no-op, as in :meth:`delete`.

        Args:
            uuid: service id, or the service.
            timeout: seconds.
            force: ignored.
        """
        if isinstance(uuid, DeploymentService):
            self.delete(uuid, timeout)
            return
        try:
            service = self.get_service(_service_id(uuid))
        except DeploymentNotFoundError:
            logger.info("No deployment with service id %s: nothing to delete.", uuid)
            return
        self.delete(service, timeout)

    def get_model_server_logs(
        self, uuid: UUID, follow: bool = False, tail: int | None = None
    ) -> Generator[str, bool, None]:
        """The deployment's log lines (ZenML API).

        Args:
            uuid: service id.
            follow: stream.
            tail: last N lines.

        Returns:
            A generator of lines.
        """
        return self.get_service(uuid).get_logs(follow=follow, tail=tail)

    def get_service(self, uuid: UUID) -> DeploymentService:
        """Loads a deployment by service id, status read from the backend.

        Args:
            uuid: service id.

        Returns:
            The service.

        Raises:
            DeploymentNotFoundError: no such service.
        """
        return store.load_service(uuid)

    @staticmethod
    def get_model_server_info(service: BaseService) -> dict[str, str | None]:
        """What `zenml model-deployer models describe` shows.

        Args:
            service: the service.

        Returns:
            Upper-case keys to strings.
        """
        if not isinstance(service, DeploymentService):
            return {}
        d = service.describe()
        return {
            "PREDICTION_URL": service.prediction_url,
            "HEALTH_CHECK_URL": service.healthcheck_url,
            "DEPLOYMENT_NAME": service.deployment_name,
            "MODEL_URI": service.config.model_uri,
            "MODEL_NAME": service.config.model_name,
            "REVISION": str(d["revision"]),
            "CONFIG_HASH": d["config_hash"],
        }


def _service_id(ref: UUID | BaseService | str) -> UUID:
    if isinstance(ref, BaseService):
        return ref.uuid
    return ref if isinstance(ref, UUID) else UUID(str(ref))

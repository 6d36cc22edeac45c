"""BaseDeployer: the one deployment lifecycle every flavor shares.

A flavor supplies a service class (the backend hooks); everything about *when* to create,
reuse, start, update, replace, roll back and persist lives here, once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator, Iterator
from typing import Any, ClassVar, cast
from uuid import UUID

from filelock import FileLock, Timeout
from pydantic import ValidationError, model_validator
from zenml.client import Client
from zenml.enums import ServiceState
from zenml.logger import get_logger
from zenml.model_deployers.base_model_deployer import (
    BaseModelDeployer,
    BaseModelDeployerConfig,
    BaseModelDeployerFlavor,
)
from zenml.models.v2.misc.service import ServiceType
from zenml.services.service import BaseService, ServiceConfig

from zenml_model_deployers.config import (
    CanaryRollout,
    DeploymentConfig,
    DeployOptions,
    DeployPolicy,
)
from zenml_model_deployers.errors import (
    ConfigurationError,
    DeploymentError,
    DeploymentExistsError,
    DeploymentNotFoundError,
)
from zenml_model_deployers.service import (
    DeploymentService,
    DeploymentStatus,
    service_from_response,
)
from zenml_model_deployers.traffic import TrafficController, refuse_unsupported

logger = get_logger(__name__)

SERVICE_TYPE_NAME = "model-serving"


class BaseDeployerConfig(BaseModelDeployerConfig):
    """Stack component settings shared by every flavor.

    Attributes:
        default_timeout: seconds a deploy waits for readiness when the caller gives none.
    """

    default_timeout: float = 300.0

    @model_validator(mode="wrap")
    @classmethod
    def _one_line_refusal_in_zenmls_cli(cls, data: Any, handler: Any) -> Any:
        # `zenml model-deployer register|update` catches nothing: a refusal would print a
        # ~100-line traceback. Under ZenML's CLI it is one line (click's `Error: ...`) with
        # the fix; everywhere else the ValidationError stays as it is.
        try:
            return handler(data)
        except ValidationError as e:
            if not _under_zenml_cli():
                raise
            import click

            parts = cls.__module__.split(".")
            flavor = f"zmd-{parts[parts.index('flavors') + 1]}" if "flavors" in parts else "zmd"
            why = _pydantic_msg(e).removeprefix("value: ")
            raise click.ClickException(
                f"Invalid {flavor} model deployer settings: {why} (all settings: "
                f"`zenml model-deployer flavor describe {flavor}`)."
            ) from None


class BaseDeployerFlavor(BaseModelDeployerFlavor):
    """Base of our flavors: a subclass sets the class attributes below, nothing else.

    The implementation is named by import path, so importing a flavor imports no backend.
    """

    FLAVOR_NAME: ClassVar[str] = ""
    DISPLAY_NAME: ClassVar[str] = ""
    LOGO: ClassVar[str] = "mlflow"
    CONFIG_CLASS: ClassVar[type[BaseDeployerConfig]] = BaseDeployerConfig
    IMPLEMENTATION: ClassVar[str] = ""  # "package.module.ClassName"

    @property
    def name(self) -> str:
        """Flavor name (`zmd-<backend>`)."""
        return self.FLAVOR_NAME

    @property
    def display_name(self) -> str:
        """Shown in the dashboard."""
        return self.DISPLAY_NAME

    @property
    def docs_url(self) -> str | None:
        """Docs."""
        return None

    @property
    def sdk_docs_url(self) -> str | None:
        """SDK docs."""
        return None

    @property
    def logo_url(self) -> str:
        """Logo shown in the dashboard."""
        return f"https://public-flavor-logos.s3.eu-central-1.amazonaws.com/model_deployer/{self.LOGO}.png"

    @property
    def config_class(self) -> type[BaseDeployerConfig]:
        """Config class."""
        return self.CONFIG_CLASS

    @property
    def implementation_class(self) -> type[BaseDeployer]:
        """Implementation class (imported only now)."""
        import importlib

        module, _, cls = self.IMPLEMENTATION.rpartition(".")
        impl: type[BaseDeployer] = getattr(importlib.import_module(module), cls)
        return impl


class BaseDeployer(BaseModelDeployer):
    """Deploys, finds, starts, stops and deletes deployments, with one set of semantics.

    Guarantees of every public method:

    - ``deploy`` returns only once the revision serves (backend ready and health answered);
      on failure the previous revision keeps serving and stays recorded, nothing new is left
      behind, and DeploymentError carries the backend's own message.
    - deploys of one deployment are serialised by a file lock;
    - ``stop`` is reversible, ``start`` keeps the URL, ``delete`` is idempotent-safe.
    """

    NAME: ClassVar[str] = "zmd"
    FLAVOR: ClassVar[type[BaseModelDeployerFlavor]]
    SERVICE_CLASS: ClassVar[type[DeploymentService]]

    # ----------------------------------------------------------------- lookups
    @classmethod
    def flavor_name(cls) -> str:
        """The flavor name (`zmd-...`)."""
        return cls.SERVICE_CLASS.FLAVOR

    def find_deployment(self, deployment_name: str) -> DeploymentService | None:
        """The deployment of this flavor with that name, status read from the backend.

        Args:
            deployment_name: the deployment name.

        Returns:
            The service or None.
        """
        page = Client().list_services(
            flavor=self.flavor_name(),
            service_name=f"zenml-{deployment_name}",
            hydrate=True,
            size=50,
        )
        for resp in page.items:
            if not resp.service_source:
                continue
            svc = service_from_response(resp)
            if svc.deployment_name == deployment_name:
                svc.update_status()
                return svc
        return None

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
        for svc in self._services(service_uuid):
            if any(getattr(svc.config, k) != v for k, v in wanted.items()):
                continue
            if want_hash is not None and svc.status.config_hash != want_hash:
                continue
            svc.update_status()
            if running and svc.status.state != ServiceState.ACTIVE:
                continue
            out.append(svc)
        return out

    def _services(self, service_uuid: UUID | None = None) -> list[DeploymentService]:
        """Every service row of this flavor, newest first, as services (status as stored)."""
        client = Client()
        out: list[DeploymentService] = []
        page_no = 1
        while True:
            page = client.list_services(
                flavor=self.flavor_name(),
                id=service_uuid,
                sort_by="desc:created",
                hydrate=True,
                page=page_no,
                size=1000,
            )
            for resp in page.items:
                if not resp.service_source:
                    continue  # a deploy in progress records its class at once; not ours yet
                try:
                    out.append(service_from_response(resp))
                except (TypeError, ImportError, ValueError) as e:
                    logger.warning("Skipping service %s: %s", resp.id, e)
            if page_no >= page.total_pages:
                return out
            page_no += 1

    def _config_of(self, config: dict[str, Any] | ServiceConfig) -> DeploymentConfig:
        config_cls = cast(
            type[DeploymentConfig], self.SERVICE_CLASS.model_fields["config"].annotation
        )
        if isinstance(config, config_cls):
            return config
        data = config.model_dump() if isinstance(config, ServiceConfig) else config
        try:
            return config_cls.model_validate(data)
        except (ValidationError, ValueError) as e:
            msg = _pydantic_msg(e) if isinstance(e, ValidationError) else str(e)
            raise ConfigurationError(
                f"Not a {self.flavor_name()} deployment configuration: {msg}"
            ) from e

    # ----------------------------------------------------------------- configs
    def package_model(self, model: Any, name: str, input_example: Any = None) -> str:
        """Packages a trained model object into what this backend serves.

        Args:
            model: the model object.
            name: the deployment name.
            input_example: optional example input.

        Returns:
            The model reference (URI) to put in the config.

        Raises:
            ConfigurationError: this flavor cannot package objects.
        """
        raise ConfigurationError(
            f"Flavor {self.flavor_name()} cannot package a model object.",
            hint="pass a model reference (model_uri=...) instead.",
        )

    def build_config(
        self,
        *,
        model: Any = None,
        model_uri: str | None = None,
        deployment_name: str | None = None,
        model_name: str = "",
        input_example: Any = None,
        **settings: Any,
    ) -> DeploymentConfig:
        """Builds this flavor's config from a model object or a model reference.

        Args:
            model: a trained model object (packaged with :meth:`package_model`).
            model_uri: a model reference the backend understands.
            deployment_name: stable name (default: derived from `model_name`).
            model_name: the model's name.
            input_example: example input (used for packaging).
            **settings: flavor-specific serving settings.

        Returns:
            The config.

        Raises:
            ConfigurationError: neither or both of model/model_uri, or invalid settings.
        """
        from zenml_model_deployers.config import derive_deployment_name

        if (model is None) == (model_uri is None):
            raise ConfigurationError("Give exactly one of `model` (an object) or `model_uri`.")
        config_cls = cast(
            type[DeploymentConfig], self.SERVICE_CLASS.model_fields["config"].annotation
        )
        name = deployment_name or derive_deployment_name(model_name or "model")
        try:
            # Validate names and settings before any packaging work.
            config_cls(deployment_name=name, model_name=model_name, model_uri="-", **settings)
        except (ValidationError, ValueError) as e:
            msg = _pydantic_msg(e) if isinstance(e, ValidationError) else str(e)
            raise ConfigurationError(f"Invalid deployment configuration: {msg}") from e
        if model is not None:
            model_uri = self.package_model(model, name, input_example)
        return config_cls(
            deployment_name=name, model_name=model_name, model_uri=model_uri, **settings
        )

    def prepare_config(self, config: DeploymentConfig) -> DeploymentConfig:
        """Completes or pins a config before it is compared with what serves (default: as is).

        A flavor fills what the component provides (credentials references, a namespace) or
        pins a moving reference (a `latest` tag) here, so that the config hash is the
        revision's. It may refuse with ConfigurationError; nothing has started then.

        Args:
            config: a config of this flavor.

        Returns:
            The config to deploy.
        """
        return config

    # ----------------------------------------------------------------- deploy
    def deploy(
        self,
        config: DeploymentConfig,
        policy: DeployPolicy | str = DeployPolicy.UPDATE,
        timeout: float | None = None,
        model_version_id: UUID | None = None,
        seed: DeploymentService | None = None,
        canary_percent: int | None = None,
        rollout: CanaryRollout | dict[str, Any] | None = None,
    ) -> DeploymentService:
        """Deploys ``config``: create, reuse, start or update (by ``policy``), then persist.

        With ``canary_percent``, an existing deployment keeps its serving revision and the new
        one serves beside it, receiving that share of requests, until :meth:`promote` or
        :meth:`rollback` finishes the canary (only flavors whose backend splits traffic). A
        new deployment has nothing to compare with: it is created serving 100%.

        Args:
            config: what to serve.
            policy: what to do if the deployment exists with another config.
            timeout: seconds to wait for readiness (default: the component's).
            model_version_id: ZenML model version to link the service to.
            seed: a recorded service whose URL a re-created deployment should keep.
            canary_percent: 1-99: run the new revision as a canary with this share.
            rollout: with policy ``canary``: the steps, bake interval and gates
                (default ``CanaryRollout()``: 10, 50, 100 %, 60 s each). The rollout is
                recorded on the returned service (``last_rollout``) or on the raised
                RolloutFailedError (``rollout``).

        Returns:
            The serving service.

        Raises:
            ConfigurationError: invalid options, or a canary (or policy ``canary``) where none
                can run or while another one is in progress (nothing was started).
            RolloutFailedError: policy ``canary`` and a gate failed: rolled back, the stable
                revision serves all requests, the candidate is gone.
            DeploymentExistsError: policy `fail` and another config serves.
            DeploymentError: the backend failed; the previous revision keeps serving.
        """
        try:
            opts = DeployOptions(
                policy=policy,
                timeout=timeout if timeout is not None else self._default_timeout(),
                canary_percent=canary_percent,
                rollout=rollout,
            )
        except ValidationError as e:
            raise ConfigurationError(f"Invalid deploy options: {_pydantic_msg(e)}") from e
        if not isinstance(config, self.SERVICE_CLASS.model_fields["config"].annotation):  # type: ignore[arg-type]
            raise ConfigurationError(
                f"{type(config).__name__} is not a config for flavor {self.flavor_name()}.",
                hint=f"build a {self.SERVICE_CLASS.model_fields['config'].annotation.__name__}.",  # type: ignore[union-attr]
            )
        refuse_unsupported(self.SERVICE_CLASS, config, opts)
        config = self.prepare_config(config)
        name = config.deployment_name
        with self._locked(name, opts.timeout):
            existing = self.find_deployment(name)
            if existing is None:
                if opts.canary_percent is not None or opts.policy == DeployPolicy.CANARY:
                    logger.info(
                        "Deployment '%s' does not exist yet: nothing to run a canary beside; "
                        "it is created serving all requests.",
                        name,
                    )
                return self._create(config, opts.timeout, model_version_id, seed)
            same = existing.status.config_hash == config.config_hash()
            if existing.canary_candidate() is not None or (
                opts.canary_percent is not None and not same
            ):
                return self.traffic.canary(existing, config, opts.canary_percent, opts.timeout)
            if same:
                if existing.status.state == ServiceState.ACTIVE:
                    logger.info(
                        "Deployment '%s' already serves this revision (%s): reused.",
                        name,
                        existing.status.config_hash,
                    )
                    return existing
                logger.info("Deployment '%s' is not running: starting it.", name)
                self._run_hook(existing, lambda: existing.start_backend(opts.timeout), "start")
                return existing
            if opts.policy == DeployPolicy.CANARY:
                assert opts.rollout is not None  # DeployOptions fills the default
                return self.traffic.rollout(
                    existing, config, opts.rollout, opts.timeout, model_version_id
                )
            if opts.policy == DeployPolicy.FAIL:
                raise DeploymentExistsError(
                    f"Deployment '{name}' exists with another configuration "
                    f"(revision {existing.status.config_hash}) and the policy is 'fail'.",
                    deployment_name=name,
                    hint="use policy 'update', 'replace' or 'side_by_side', or another name.",
                )
            if opts.policy == DeployPolicy.SIDE_BY_SIDE:
                # The twin's name carries the revision: deploying the same config side by side
                # again finds it (idempotent) instead of making a third.
                data = config.model_dump(exclude={"name", "service_name"})
                data["deployment_name"] = f"{name[:45]}-{config.config_hash()[:8]}"
                twin = type(config).model_validate(data)
                return self.deploy(twin, DeployPolicy.FAIL, opts.timeout, model_version_id)
            if opts.policy == DeployPolicy.REPLACE:
                # Delete, then create: an outage in between, but the URL is kept when free.
                self._delete(existing, opts.timeout)
                return self._create(config, opts.timeout, model_version_id, seed=existing)
            return self._update(existing, config, opts.timeout, model_version_id)

    def _create(
        self,
        config: DeploymentConfig,
        timeout: float,
        model_version_id: UUID | None,
        seed: DeploymentService | None = None,
    ) -> DeploymentService:
        client = Client()
        resp = client.create_service(
            config=config,
            service_type=self.SERVICE_CLASS.SERVICE_TYPE,
            model_version_id=model_version_id,
        )
        status_cls = cast(
            type[DeploymentStatus], self.SERVICE_CLASS.model_fields["status"].annotation
        )
        service = self.SERVICE_CLASS(
            uuid=resp.id,
            config=config,
            status=status_cls(state=ServiceState.PENDING_STARTUP),
            admin_state=ServiceState.ACTIVE,
        )
        if seed is not None:
            service.seed_from(seed)
        try:
            # Record the class at once: ZenML's own `find_model_server` deletes rows without
            # one, which would pull the row from under a deploy in progress.
            self.persist(service)
            service.provision_revision(timeout)
            self.persist(service)
        except BaseException:
            # Nothing half-made: no process, resource or service row survives a failed create
            # (the failed revision's log does: the error names it).
            with contextlib.suppress(Exception):
                service.discard_backend(30)
            with contextlib.suppress(KeyError):
                client.delete_service(resp.id)
            raise
        logger.info("Deployment '%s' serves at %s", service.deployment_name, service.prediction_url)
        return service

    def _update(
        self,
        service: DeploymentService,
        config: DeploymentConfig,
        timeout: float,
        model_version_id: UUID | None,
    ) -> DeploymentService:
        old_config = service.config
        logger.info(
            "Updating deployment '%s': revision %s -> %s (the old one serves until then).",
            service.deployment_name,
            service.status.config_hash,
            config.config_hash(),
        )
        service.config = config
        try:
            service.provision_revision(timeout)
        except BaseException as e:
            service.config = old_config
            service.status.last_error = f"update to {config.config_hash()} failed: {e}"[:2000]
            with contextlib.suppress(Exception):
                self.persist(service)
            raise
        self.persist(service, model_version_id=model_version_id)
        return service

    # ----------------------------------------------------------------- canaries (traffic.py)
    @property
    def traffic(self) -> TrafficController:
        """The controller of this deployer's canaries and rollouts (persists through it)."""
        return TrafficController(self.persist)

    def promote(
        self, service: DeploymentService, timeout: float | None = None
    ) -> DeploymentService:
        """Finishes a canary by sending all requests to the candidate, which becomes the
        recorded revision; the previous revision is retired. Blocks until the backend serves
        only the candidate; on failure the canary split stays as it was.

        Args:
            service: the deployment running a canary.
            timeout: seconds.

        Returns:
            The service, now serving the candidate.

        Raises:
            ConfigurationError: no canary is in progress (nothing changed).
            DeploymentError: the backend failed; the canary split keeps serving.
        """
        return self._locked_traffic(service, timeout, self.traffic.promote)

    def rollback(
        self, service: DeploymentService, timeout: float | None = None
    ) -> DeploymentService:
        """Ends a canary by sending all requests back to the stable revision and retiring the
        candidate. Blocks until the backend serves only the stable revision; on failure the
        canary split stays as it was, and ConfigurationError (no canary) or DeploymentError
        (the backend failed) is raised.

        Args:
            service: the deployment running a canary.
            timeout: seconds.

        Returns:
            The service, serving its recorded revision only.
        """
        return self._locked_traffic(service, timeout, self.traffic.rollback)

    def _locked_traffic(
        self,
        service: DeploymentService,
        timeout: float | None,
        change: Callable[[DeploymentService, float], DeploymentService],
    ) -> DeploymentService:
        t = timeout or self._default_timeout()
        with self._locked(service.deployment_name, t):
            return change(service, t)

    # ----------------------------------------------------------------- start / stop / delete
    def start(
        self, service: DeploymentService, timeout: float | None = None, port: int | None = None
    ) -> DeploymentService:
        """Starts a stopped deployment's recorded revision on its URL; blocks until it serves.

        Args:
            service: the deployment.
            timeout: seconds.
            port: move the URL to this port first (local backends; e.g. the recorded port was
                taken by another program while the deployment was stopped). A running
                deployment moves without a restart of its server.

        Returns:
            The service.
        """
        t = timeout or self._default_timeout()

        def start() -> None:
            if port is not None:
                service.move_port(port)
            service.start_backend(t)

        with self._locked(service.deployment_name, t):
            self._run_hook(service, start, "start")
        return service

    def stop(self, service: DeploymentService, timeout: float = 30) -> DeploymentService:
        """Stops serving (reversible by ``start``).

        Args:
            service: the deployment.
            timeout: seconds.

        Returns:
            The service.
        """
        with self._locked(service.deployment_name, timeout):
            self._run_hook(service, lambda: service.stop_backend(timeout), "stop")
        return service

    def delete(self, service: DeploymentService, timeout: float = 30) -> None:
        """Deletes the deployment from the backend and the service store. Idempotent.

        Deleting a deployment that is already deleted is a no-op (MLflow's deployment
        semantics), so clean-up code never has to check first. A service object whose row is
        gone only clears what its backend may still hold, and never touches a deployment
        that was created again under the same name since.

        Args:
            service: the deployment.
            timeout: seconds.
        """
        with self._locked(service.deployment_name, timeout):
            if not service.is_detached and not _row_exists(service.uuid):
                now = self.find_deployment(service.deployment_name)
                if now is not None and now.uuid != service.uuid:
                    logger.info(
                        "Deployment '%s' (%s) is already deleted: nothing to do.",
                        service.deployment_name,
                        service.uuid,
                    )
                    return
            self._delete(service, timeout)

    def _delete(self, service: DeploymentService, timeout: float) -> None:
        service.delete_backend(timeout)
        with contextlib.suppress(KeyError):
            Client().delete_service(service.uuid)

    def _run_hook(self, service: DeploymentService, hook: Any, what: str) -> None:
        try:
            hook()
        except ConfigurationError as e:
            # Refused before anything changed: the deployment stays in the state it was in.
            service.status.last_error = f"{what} refused: {e}"[:2000]
            with contextlib.suppress(Exception):
                self.persist(service)
            raise
        except BaseException as e:
            service.status.update_state(ServiceState.ERROR, f"{what} failed: {e}"[:2000])
            with contextlib.suppress(Exception):
                self.persist(service)
            raise
        self.persist(service)

    # ----------------------------------------------------------------- persistence
    def persist(self, service: DeploymentService, model_version_id: UUID | None = None) -> None:
        """Writes the service's state, URL and labels to ZenML's service store.

        Args:
            service: the service.
            model_version_id: re-link to this model version.
        """
        if service.is_detached:
            return
        service.status.prediction_url = service.prediction_url
        Client().update_service(
            id=service.uuid,
            name=service.config.service_name,
            service_source=service.model_dump()["type"],
            admin_state=service.admin_state,
            status=service.status.model_dump(mode="json"),
            labels=service.labels(),
            prediction_url=service.prediction_url,
            health_check_url=service.healthcheck_url,
            model_version_id=model_version_id,
        )

    def _default_timeout(self) -> float:
        cfg = self.config
        return float(getattr(cfg, "default_timeout", 300.0))

    @contextlib.contextmanager
    def _locked(self, name: str, timeout: float) -> Iterator[None]:
        from zenml_model_deployers.local.service import private_dir, zmd_home

        lock_dir = private_dir(zmd_home() / "locks")
        lock = FileLock(str(lock_dir / f"{self.flavor_name()}--{name}.lock"), mode=0o600)
        try:
            lock.acquire(timeout=timeout + 120)
        except Timeout as e:
            raise DeploymentError(
                f"Another deploy of '{name}' holds the lock for too long.",
                deployment_name=name,
                hint=f"remove {lock.lock_file} if no other deploy runs.",
            ) from e
        try:
            yield
        finally:
            lock.release()

    # ----------------------------------------------------------------- ZenML's BaseModelDeployer API
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
        try:
            resp = Client().get_service(uuid)
        except KeyError as e:
            raise DeploymentNotFoundError(f"No deployment with service id {uuid}.") from e
        try:
            svc = service_from_response(resp)
        except TypeError as e:
            raise DeploymentNotFoundError(
                f"Service {uuid} is not a zenml-model-deployers service: {e}"
            ) from e
        svc.update_status()
        return svc

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


def _row_exists(uuid: UUID) -> bool:
    try:
        Client().get_service(uuid, hydrate=False)
    except KeyError:
        return False
    return True


def _service_id(ref: UUID | BaseService | str) -> UUID:
    if isinstance(ref, BaseService):
        return ref.uuid
    return ref if isinstance(ref, UUID) else UUID(str(ref))


def _under_zenml_cli() -> bool:
    """True inside a command of ZenML's own CLI (`zenml ...`)."""
    import sys

    zenml_cli = sys.modules.get("zenml.cli.cli")
    if zenml_cli is None or "click" not in sys.modules:
        return False
    import click

    ctx = click.get_current_context(silent=True)
    return ctx is not None and ctx.find_root().command is getattr(zenml_cli, "cli", None)


def _pydantic_msg(e: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'value'}: "
        f"{err['msg'].removeprefix('Value error, ')}"
        for err in e.errors()
    )

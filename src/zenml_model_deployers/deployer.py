"""BaseDeployer: the one deployment lifecycle every flavor shares.

A flavor supplies a service class (the backend hooks); everything about *when* to create,
reuse, start, update, replace, roll back and persist lives here, once. Beside it, each with
one job: ``traffic.py`` (canaries, promote, rollback, progressive rollouts), ``store.py``
(rows of ZenML's service store), ``lock.py`` (one change of a deployment at a time) and
``zenml_api.py`` (ZenML's model-deployer API, the base class, mapped onto this lifecycle).
"""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar, Literal, cast
from uuid import UUID

from pydantic import ValidationError, model_validator
from zenml.enums import ServiceState
from zenml.logger import get_logger
from zenml.model_deployers.base_model_deployer import (
    BaseModelDeployerConfig,
    BaseModelDeployerFlavor,
)
from zenml.services.service import ServiceConfig

from zenml_model_deployers import store
from zenml_model_deployers.config import (
    CanaryRollout,
    DeploymentConfig,
    DeployOptions,
    DeployPolicy,
)
from zenml_model_deployers.errors import ConfigurationError, DeploymentExistsError
from zenml_model_deployers.lock import deployment_lock
from zenml_model_deployers.service import DeploymentService, DeploymentStatus
from zenml_model_deployers.traffic import TrafficController, refuse_unsupported
from zenml_model_deployers.zenml_api import ZenMLDeployerAPI

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


class BaseDeployer(ZenMLDeployerAPI):
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
        config_cls = self._config_class()
        name = deployment_name or derive_deployment_name(model_name or "model")
        try:
            # Validate names and settings before any packaging work.
            config_cls(deployment_name=name, model_name=model_name, model_uri="-", **settings)
        except ValueError as e:  # pydantic's ValidationError is one
            raise ConfigurationError(f"Invalid deployment configuration: {_pydantic_msg(e)}") from e
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

    @classmethod
    def _config_class(cls) -> type[DeploymentConfig]:
        """This flavor's deployment config class (its service's ``config`` field)."""
        return cast(type[DeploymentConfig], cls.SERVICE_CLASS.model_fields["config"].annotation)

    def _config_of(self, config: dict[str, Any] | ServiceConfig) -> DeploymentConfig:
        config_cls = self._config_class()
        if isinstance(config, config_cls):
            return config
        data = config.model_dump() if isinstance(config, ServiceConfig) else config
        try:
            return config_cls.model_validate(data)
        except ValueError as e:  # pydantic's ValidationError is one
            raise ConfigurationError(
                f"Not a {self.flavor_name()} deployment configuration: {_pydantic_msg(e)}"
            ) from e

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
        if not isinstance(config, self._config_class()):
            raise ConfigurationError(
                f"{type(config).__name__} is not a config for flavor {self.flavor_name()}.",
                hint=f"build a {self._config_class().__name__}.",
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
            # A canary in progress, or a new one, is the traffic controller's; a canary of
            # the revision that already serves is none: reused or started below.
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
        uuid = store.create_row(config, self.SERVICE_CLASS.SERVICE_TYPE, model_version_id)
        status_cls = cast(
            type[DeploymentStatus], self.SERVICE_CLASS.model_fields["status"].annotation
        )
        service = self.SERVICE_CLASS(
            uuid=uuid,
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
            store.delete_row(uuid)
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
        return self._finish_canary(service, "promote", timeout)

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
        return self._finish_canary(service, "rollback", timeout)

    def _finish_canary(
        self,
        service: DeploymentService,
        verdict: Literal["promote", "rollback"],
        timeout: float | None,
    ) -> DeploymentService:
        t = timeout or self._default_timeout()
        with self._locked(service.deployment_name, t):
            return self.traffic.finish(service, verdict, t)

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
            if not service.is_detached and not store.row_exists(service.uuid):
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
        store.delete_row(service.uuid)

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

    # ----------------------------------------------------------------- store and lock (store.py, lock.py)
    def find_deployment(self, deployment_name: str) -> DeploymentService | None:
        """The deployment of this flavor with that name, status read from the backend.

        Args:
            deployment_name: the deployment name.

        Returns:
            The service or None.
        """
        return store.find_deployment(self.flavor_name(), deployment_name)

    def persist(self, service: DeploymentService, model_version_id: UUID | None = None) -> None:
        """Writes the service's state, URL and labels to ZenML's service store.

        Args:
            service: the service.
            model_version_id: re-link to this model version.
        """
        store.persist(service, model_version_id)

    def _default_timeout(self) -> float:
        cfg = self.config
        return float(getattr(cfg, "default_timeout", 300.0))

    def _locked(self, name: str, timeout: float) -> contextlib.AbstractContextManager[None]:
        return deployment_lock(self.flavor_name(), name, timeout)


def _under_zenml_cli() -> bool:
    """True inside a command of ZenML's own CLI (`zenml ...`)."""
    import sys

    zenml_cli = sys.modules.get("zenml.cli.cli")
    if zenml_cli is None or "click" not in sys.modules:
        return False
    import click

    ctx = click.get_current_context(silent=True)
    return ctx is not None and ctx.find_root().command is getattr(zenml_cli, "cli", None)


def _pydantic_msg(e: ValueError) -> str:
    """A validation error in one line: every field's message (a plain ValueError: its text)."""
    if not isinstance(e, ValidationError):
        return str(e)
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'value'}: "
        f"{err['msg'].removeprefix('Value error, ')}"
        for err in e.errors()
    )

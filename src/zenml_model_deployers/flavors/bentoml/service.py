"""A bento served by `bentoml serve` (or its container) behind the deployment's front: on the
direct data path by default where eligible (``serve.py``: a gate in each API worker), else
through its relay."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, PrivateAttr
from zenml.models.v2.misc.service import ServiceType

from zenml_model_deployers.errors import ConfigurationError, DeploymentError, PredictionError

# The config moved to config.py; ZenML recorded its source path here, so it stays importable.
from zenml_model_deployers.flavors.bentoml.config import (
    BentoMLDeploymentConfig as BentoMLDeploymentConfig,
)
from zenml_model_deployers.flavors.bentoml.flavor import FLAVOR_NAME
from zenml_model_deployers.flavors.bentoml.packaging import (
    RouteInfo,
    docker_engine_error,
    pinned_store,
    resolve_bento,
)
from zenml_model_deployers.local import process as proc
from zenml_model_deployers.local.service import (
    LocalDeploymentStatus,
    LocalProcessService,
    private_dir,
)
from zenml_model_deployers.local.state import tail
from zenml_model_deployers.service import serving_type

CONTAINER_PORT = 3000


# `bentoml serve`'s import failure, by bento tag: 'Failed to import module "svc": <cause>
_IMPORT_FAILED = re.compile(r"""Failed to import module "([^"]+)": (.+?)$""", re.MULTILINE)


class BentoMLDeploymentStatus(LocalDeploymentStatus):
    """Adds the serving bento's APIs.

    Attributes:
        routes: API name -> route and parameters, read from the bento's schema.
        image: the image serving it, when containerized.
        store: the BentoML home the server runs with (the bento and its pinned models).
        canary_routes: during a canary, the candidate's APIs (``routes`` once promoted).
        canary_image: the candidate's image, when containerized.
        canary_store: the BentoML home the candidate's server runs with.
    """

    routes: dict[str, RouteInfo] = Field(default_factory=dict)
    image: str | None = None
    store: str | None = None
    canary_routes: dict[str, RouteInfo] = Field(default_factory=dict)
    canary_image: str | None = None
    canary_store: str | None = None


class BentoMLDeploymentService(LocalProcessService):
    """A BentoML 1.4 service (`@bentoml.service`) served locally behind a stable URL."""

    SERVICE_TYPE: ClassVar[ServiceType] = serving_type(
        FLAVOR_NAME, "BentoML service served locally by zenml-model-deployers"
    )
    FLAVOR: ClassVar[str] = FLAVOR_NAME
    PREDICT_PATH: ClassVar[str] = "/"
    # A restart keeps BentoML's settings and, for a containerized bento, Docker's.
    RESTART_INHERITED_ENV: ClassVar[tuple[str, ...]] = ("BENTOML_", "DOCKER_", "XDG_RUNTIME_DIR")
    # `bentoml serve`'s API workers take the front's socket at their gate (serve.py, worker.py).
    SUPPORTS_DIRECT_DATA_PATH: ClassVar[bool] = True

    config: BentoMLDeploymentConfig
    status: BentoMLDeploymentStatus

    # The APIs of the revision being provisioned (the status keeps the serving one's).
    _pending_routes: dict[str, RouteInfo] | None = PrivateAttr(default=None)
    _pending_image: str | None = PrivateAttr(default=None)
    _pending_store: str | None = PrivateAttr(default=None)

    # ----------------------------------------------------------------- APIs
    def _routes(self) -> dict[str, RouteInfo]:
        return self._pending_routes if self._pending_routes is not None else self.status.routes

    def api_name(self, api: str | None = None) -> str:
        """The API a request goes to: `api`, else the configured one, else the bento's first.

        Args:
            api: an API name.

        Returns:
            The API name.

        Raises:
            PredictionError: the bento has no such API.
        """
        routes = self._routes()
        name = api or self.config.api or next(iter(routes), None)
        if name is None or (routes and name not in routes):
            raise PredictionError(
                f"Bento '{self.config.model_uri}' has no API {name!r}.",
                deployment_name=self.deployment_name,
                hint=f"its APIs: {', '.join(routes) or 'unknown (not deployed yet)'}.",
            )
        return name

    def predict_path(self) -> str:
        """The default API's route.

        Returns:
            A URL path.
        """
        routes = self._routes()
        try:
            name = self.api_name()
        except PredictionError:
            return "/"
        return routes[name].route if name in routes else f"/{name}"

    def predict(self, data: Any, timeout: float = 60.0, api: str | None = None) -> Any:
        """Calls one of the bento's APIs and returns its answer.

        Args:
            data: a dict of the API's parameters, or the value of its only parameter (array,
                list, DataFrame...).
            timeout: seconds.
            api: the API name (default: the deployment's `api`, else the bento's first).

        Returns:
            The API's answer (JSON decoded; text or bytes for other media types).

        Raises:
            PredictionError: the deployment has no URL or the API failed (its message attached).
        """
        if not self.status.url:
            raise PredictionError(
                f"Deployment '{self.deployment_name}' has no URL: it was never deployed.",
                deployment_name=self.deployment_name,
            )
        name = self.api_name(api)
        headers, body = self.format_request(data, api=name)
        return self._send(self.status.url + self._routes()[name].route, headers, body, timeout)

    def format_request(self, data: Any, api: str | None = None) -> tuple[dict[str, str], bytes]:
        """Builds the JSON body BentoML expects: the API's parameters by name.

        Args:
            data: a dict of parameters, or the value of the API's only parameter.
            api: the API name.

        Returns:
            (headers, body).

        Raises:
            PredictionError: the data does not fit the API's parameters.
        """
        name = self.api_name(api)
        route = self._routes().get(name, RouteInfo(route=f"/{name}"))
        params = list(route.inputs)
        if isinstance(data, dict) and data and set(data) <= set(params):
            payload = {k: _jsonable(v, route.inputs[k]) for k, v in data.items()}
        elif len(params) == 1 or (len(route.required) == 1 and not isinstance(data, dict)):
            key = params[0] if len(params) == 1 else route.required[0]
            payload = {key: _jsonable(data, route.inputs.get(key, {}))}
        else:
            raise PredictionError(
                f"API '{name}' of deployment '{self.deployment_name}' takes the parameters "
                f"{', '.join(params) or '(none)'}.",
                deployment_name=self.deployment_name,
                hint="pass a dict with those names.",
            )
        return {"Content-Type": "application/json"}, json.dumps(payload, default=_np).encode()

    def parse_response(self, body: bytes) -> Any:
        """JSON answers decoded; text returned as str, other media as bytes.

        Args:
            body: response body.

        Returns:
            The answer.
        """
        try:
            return json.loads(body)
        except ValueError:
            try:
                return body.decode()
            except UnicodeDecodeError:
                return body

    # ----------------------------------------------------------------- process
    def failure_cause(self, log: Path) -> str:
        """BentoML's import error for the bento's own module, else the generic cause.

        `bentoml serve` reports a service it cannot import as one `Error:` paragraph that tries
        two ways to import it; the first (by bento tag, how zmd serves) names the real cause
        (e.g. ``No module named 'x'``), the second only that no such module path exists.

        Args:
            log: the server's log.

        Returns:
            The line, or "" if the log shows none.
        """
        m = _IMPORT_FAILED.search(tail(log, 400, max_bytes=200_000))
        if m:
            return f"BentoML cannot import the service module '{m.group(1)}': {m.group(2)}"
        return proc.failure_cause(log)

    def server_command(self, port: int) -> list[str]:
        """`bentoml serve <tag>` from this environment, or `docker run` of its image.

        Args:
            port: private port.

        Returns:
            argv.
        """
        args = [f"--arg={k}={v}" for k, v in sorted(self.config.args.items())]
        if self.config.containerize:
            image = self._pending_image or self.status.image or self.config.image
            assert image, "the image is prepared before the server starts"
            # `-e NAME` without a value passes the variable from docker's own environment:
            # resolved secrets never appear on a command line.
            env = [f"-e{k}" for k in sorted(self.config.env)]
            name = f"zmd-{self.deployment_name}-{port}"
            return [
                "docker",
                "run",
                "--rm",
                "--name",
                name,
                "-p",
                f"127.0.0.1:{port}:{CONTAINER_PORT}",
                *env,
                image,
                "serve",
                *args,
            ]
        return [
            proc.python_executable(),
            "-m",
            "bentoml",
            "serve",
            self.config.model_uri,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *args,
        ]

    @property
    def direct_data_path(self) -> bool:
        """See LocalProcessService.direct_data_path; a containerized bento keeps the relay
        (its socket is Docker's port mapping)."""
        return super().direct_data_path and not self.config.containerize

    def gated_server_command(self, port: int, handoff: Path, gate: Path) -> list[str]:
        """`bentoml serve <tag>` on the private ``port`` through ``serve.py``, whose API workers
        take the front's socket at the gate (``local/gate.py``).

        Args:
            port: the private port.
            handoff: the front's handoff socket.
            gate: the gate file.

        Returns:
            argv.

        Raises:
            ConfigurationError: a containerized bento (its config refuses the direct path).
        """
        plain = self.server_command(port)
        if plain[1:4] != ["-m", "bentoml", "serve"]:  # the config refuses it: never reached
            raise ConfigurationError(
                f"'{self.deployment_name}' serves its bento in a container, which cannot take "
                "the front's socket: the direct data path is for `bentoml serve` processes.",
                deployment_name=self.deployment_name,
                hint="set data_path='relay', or containerize=False to serve the bento as a "
                "process.",
            )
        return [
            plain[0],
            "-m",
            "zenml_model_deployers.flavors.bentoml.serve",
            *self.gate_args(handoff, gate),
            "--",
            *plain[4:],
        ]

    def server_env(self) -> dict[str, str]:
        """Adds BentoML's opt-out of usage tracking (no network calls from a local server).

        Returns:
            The environment.
        """
        env = super().server_env()
        store = self._pending_store or self.status.store
        if store:
            env["BENTOML_HOME"] = store
        env.setdefault("BENTOML_DO_NOT_TRACK", "True")
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def _prepare(self) -> None:
        """Checks the bento (and Docker, when containerized) before anything starts."""
        info = resolve_bento(self.config.model_uri)
        if self.config.api and self.config.api not in info.routes:
            raise ConfigurationError(
                f"Bento '{info.tag}' has no API '{self.config.api}'.",
                deployment_name=self.deployment_name,
                hint=f"its APIs: {', '.join(info.routes)}.",
            )
        self._pending_routes = info.routes
        self._pending_image = self._image(info.tag) if self.config.containerize else None
        self._pending_store = str(pinned_store(info, self.workdir))

    def _image(self, tag: str) -> str:
        why = docker_engine_error()
        if why is not None:
            raise ConfigurationError(
                f"Deployment '{self.deployment_name}' asks for a containerized bento "
                f"(containerize=True), which needs a running Docker engine: {why}.",
                deployment_name=self.deployment_name,
                hint="start a Docker engine (or point DOCKER_HOST at one), or deploy with "
                "containerize=False to serve the bento as a local process.",
            )
        if self.config.image:
            return self.config.image
        image = tag
        private_dir(self.workdir)
        log = self.workdir / "containerize.log"
        with open(log, "w") as out:
            done = subprocess.run(
                [proc.python_executable(), "-m", "bentoml", "containerize", tag, "-t", image],
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=3600,
                env=proc.env_with_venv_path(),
            )
        if done.returncode != 0:
            raise DeploymentError(
                f"`bentoml containerize {tag}` failed.",
                deployment_name=self.deployment_name,
                backend_message=proc.failure_excerpt(log),
            )
        return image

    @contextlib.contextmanager
    def _checked_bento(self) -> Iterator[None]:
        """The bento of ``self.config`` checked and pinned (the pending revision's APIs, image
        and home) while the block starts its server; then the homes of retired revisions go."""
        self._prepare()
        try:
            yield
        finally:
            self._pending_routes = None
            self._pending_image = None
            self._pending_store = None
            self._drop_retired_stores()

    def _with_checked_bento(self, action: Any) -> None:
        """Runs a rollout with the bento checked first; its APIs become the status's on success."""
        with self._checked_bento():
            action()
            if self._pending_routes is not None:
                self.status.routes = self._pending_routes
            self.status.image = self._pending_image
            self.status.store = self._pending_store

    def _drop_retired_stores(self) -> None:
        """Removes the homes of retired revisions (their servers are gone by now): all but the
        serving revision's and a canary candidate's."""
        keep = {self.status.store, self.status.canary_store}
        for old in self.workdir.glob("store-*"):
            if str(old) not in keep:
                shutil.rmtree(old, ignore_errors=True)

    @contextlib.contextmanager
    def candidate_environment(self) -> Iterator[None]:
        """The candidate's bento is checked and pinned in its own BentoML home, which its
        server runs with (see LocalProcessService.candidate_environment).

        Yields:
            While the candidate's server starts.
        """
        with self._checked_bento():
            yield
            self.status.canary_routes = self._pending_routes or {}
            self.status.canary_image = self._pending_image
            self.status.canary_store = self._pending_store

    def adopt_candidate(self) -> None:
        """The promoted candidate's APIs, image and home become the deployment's."""
        status = self.status
        if status.canary_store is not None:  # None: started by an older version, in `store`
            status.routes = status.canary_routes
            status.image = status.canary_image
            status.store = status.canary_store
        self.forget_candidate()

    def forget_candidate(self) -> None:
        """The candidate's home goes (unless the serving revision shares it)."""
        status = self.status
        status.canary_routes, status.canary_image, status.canary_store = {}, None, None
        self._drop_retired_stores()

    def provision_revision(self, timeout: float) -> None:
        """Checks the bento first (a missing tag fails before anything starts), then rolls out.

        Args:
            timeout: seconds.
        """
        self._with_checked_bento(
            lambda: super(BentoMLDeploymentService, self).provision_revision(timeout)
        )

    def start_backend(self, timeout: float) -> None:
        """Starts the recorded bento again (checked first: it may have been deleted).

        Args:
            timeout: seconds.
        """
        self._with_checked_bento(
            lambda: super(BentoMLDeploymentService, self).start_backend(timeout)
        )

    def curl_example(self) -> str:
        """A request to the default API, its parameters by name.

        Returns:
            A curl command line.
        """
        routes = self._routes()
        name = self.config.api or next(iter(routes), "")
        params = routes[name].inputs if name in routes else {}
        return self._curl(json.dumps({p: "..." for p in params}) if params else "{...}")

    def describe(self) -> dict[str, Any]:
        """Adds the bento's APIs and their URLs.

        Returns:
            A JSON-able dict.
        """
        out = super().describe()
        out["bento"] = self.config.model_uri
        if self.status.url:
            out["apis"] = {k: self.status.url + r.route for k, r in self.status.routes.items()}
        return out


def _np(obj: Any) -> Any:
    """JSON fallback for numpy scalars and arrays."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def _jsonable(value: Any, schema: dict[str, Any]) -> Any:
    """A DataFrame in the orient the API declares; arrays and series as lists."""
    if hasattr(value, "to_dict") and hasattr(value, "columns"):
        orient = schema.get("orient", "records")
        return value.to_dict(orient="list" if orient == "columns" else "records")
    if hasattr(value, "tolist"):
        return value.tolist()
    return value

"""LocalProcessService: the process runtime every local backend (MLflow, BentoML, vLLM) shares.

A local deployment is two processes, both started directly (no daemon double-fork):

- the relay (``local/relay.py``), which owns the deployment's public port and so its URL;
- the current revision's server, on a private loopback port.

An update starts the new server, waits until it is ready, switches the relay, then retires
the old server gracefully. A failure at any point tears the new server down and leaves the
old one serving. Files (logs, the relay's ready file) live under
``<ZenML config dir>/zmd/local/<flavor>/<deployment>/``, private to the user (folders 0700,
files 0600): logs can hold request data, the ready file holds the relay's control token.

An optional ``api_key`` (a ZenML secret reference) is enforced by the relay on every request;
a deployment bound to a non-loopback address must have one, or say ``allow_unauthenticated``.

Canaries: ``set_traffic_split`` starts the candidate revision's server beside the stable one and
has the relay route a share of requests to it (at request boundaries); the relay counts
requests, errors and latency per revision (``read_revision_metrics``; Prometheus on the metrics
port). The candidate is not restarted by the front's supervisor while it is a candidate (a crash
shows as refused requests, which fail a rollout's gates); it is once promoted.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import shutil
import time
from abc import abstractmethod
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any, ClassVar

from pydantic import PrivateAttr
from zenml.enums import ServiceState

from zenml_model_deployers import secrets
from zenml_model_deployers.config import DeploymentConfig
from zenml_model_deployers.errors import ConfigurationError, DeploymentError, PortInUseError
from zenml_model_deployers.local import process as proc
from zenml_model_deployers.local.launch import (
    HANDOFF_SOCKET,
    METRICS_DIR,
    make_tree_private,
    restart_env,
    start_front,
)
from zenml_model_deployers.local.readiness import wait_until_ready
from zenml_model_deployers.local.relay import (
    control_request,
    free_port,
    port_is_free,
    read_ready_file,
)
from zenml_model_deployers.local.state import (
    SPEC_FILE,
    local_state,
    log_lines,
    orphans,
    supervision_of,
)
from zenml_model_deployers.local.supervisor import write_spec
from zenml_model_deployers.provenance import LOCAL_PROVENANCE_FIELDS, local_serving_fields
from zenml_model_deployers.service import DeploymentService, DeploymentStatus, RevisionMetrics

DRAIN_TIMEOUT = 10.0
logger = logging.getLogger(__name__)


def zmd_home() -> Path:
    """The product's directory inside the ZenML config dir (so isolated configs isolate it too).

    Returns:
        A path.
    """
    from zenml.utils.io_utils import get_global_config_directory

    return Path(get_global_config_directory()) / "zmd"


def private_dir(path: Path) -> Path:
    """Creates a folder only its owner can enter (0700), and makes its parents up to the
    product's directory private too (they are created with the umask's mode).

    Args:
        path: the folder.

    Returns:
        The path.
    """
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    home = zmd_home()
    for p in (path, *path.parents):
        if p != home and home not in p.parents:
            break
        with contextlib.suppress(OSError):  # a folder of another owner stays as it is
            if p.stat().st_mode & 0o077:
                p.chmod(0o700)
    return path


def is_loopback(host: str) -> bool:
    """Tells whether an address is reachable from this machine only.

    Args:
        host: an address or host name ("" and "0.0.0.0" mean every interface).

    Returns:
        True for 127.0.0.0/8, ::1 and localhost.
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class LocalDeploymentConfig(DeploymentConfig):
    """Serving settings shared by local backends.

    Attributes:
        host: address the deployment's URL binds to.
        port: pin the deployment's public port (None: a free port, kept across revisions).
        api_key: a ZenML secret reference (``{{secret.key}}``) to the key every request to the
            URL must carry as ``Authorization: Bearer <key>`` (None: no key).
        allow_unauthenticated: accept a non-loopback ``host`` without an ``api_key``.
        metrics_port: pin the port of the relay's Prometheus metrics (``GET /metrics`` on
            127.0.0.1; None: a free port, shown by ``zmd models describe``).
    """

    PROVENANCE_FIELDS = LOCAL_PROVENANCE_FIELDS

    host: str = "127.0.0.1"
    port: int | None = None
    api_key: str | None = None
    allow_unauthenticated: bool = False
    metrics_port: int | None = None

    def serving_fields(self) -> dict[str, Any]:
        """See DeploymentConfig.serving_fields; no `api_key` when there is none, so that the
        hashes of deployments made before the field existed stay what they were.

        Returns:
            A JSON-able dict.
        """
        return local_serving_fields(self.model_dump(mode="json"))

    def __init__(self, **data: Any) -> None:
        """Validates the port range, the key reference, and refuses an exposed deployment
        without a key unless the user accepted that explicitly.

        Args:
            **data: fields.
        """
        super().__init__(**data)
        if self.port is not None and not (0 < self.port < 65536):
            raise ValueError(f"port {self.port} is out of range 1-65535.")
        if self.metrics_port is not None and not (0 < self.metrics_port < 65536):
            raise ValueError(f"metrics_port {self.metrics_port} is out of range 1-65535.")
        if self.api_key is not None and not secrets.is_secret_reference(self.api_key):
            # Never echo the value: it may be the key itself.
            raise ValueError(
                "api_key must be a ZenML secret reference such as {{my-model-key.api_key}}, "
                "never the key itself (configs are stored in the service store and artifacts): "
                "`zenml secret create my-model-key --api_key=...`."
            )
        if not is_loopback(self.host) and not self.api_key and not self.allow_unauthenticated:
            raise ValueError(
                f"host {self.host!r} exposes deployment '{self.deployment_name}' beyond this "
                "machine without an API key: anyone who can reach this address could send it "
                "requests, read its predictions and load it. Set api_key='{{secret.key}}' (a "
                "ZenML secret), bind to 127.0.0.1, or pass allow_unauthenticated=True to accept "
                "that risk."
            )


class LocalDeploymentStatus(DeploymentStatus):
    """Where the local processes of a deployment are.

    Attributes:
        public_port: the relay's port (the URL's port), kept across revisions and restarts.
        relay: the relay process.
        control_port: the relay's control port.
        server: the serving revision's process.
        server_port: its private port.
        log_path: its log file.
        restarts: how many times the front restarted this revision's server after it died.
        metrics_port: the relay's Prometheus port (127.0.0.1, ``GET /metrics``).
        canary_server: during a canary, the candidate revision's process.
        canary_port: its private port.
        canary_log_path: its log file.
        direct: the serving server accepts on the public socket itself (``data_path="direct"``):
            the relay is out of the data path and ``server_port`` is None.
    """

    public_port: int | None = None
    relay: proc.ProcessHandle | None = None
    control_port: int | None = None
    server: proc.ProcessHandle | None = None
    server_port: int | None = None
    log_path: str | None = None
    restarts: int = 0
    metrics_port: int | None = None
    canary_server: proc.ProcessHandle | None = None
    canary_port: int | None = None
    canary_log_path: str | None = None
    direct: bool = False


class LocalProcessService(DeploymentService):
    """A deployment served by a local process behind a relay."""

    config: LocalDeploymentConfig
    status: LocalDeploymentStatus

    _api_key: tuple[str, str] | None = PrivateAttr(default=None)

    SUPPORTS_TRAFFIC_SPLIT: ClassVar[bool] = True
    # The server can accept on the front's listening socket (``data_path="direct"``).
    SUPPORTS_DIRECT_DATA_PATH: ClassVar[bool] = False

    # Restart policy of the front's supervisor (local/supervisor.py): a dead server is started
    # again at once, a repeated crash after RESTART_BACKOFF[0] * 2**(n-2) seconds (n-th restart
    # in a row, at most RESTART_BACKOFF[1]); after
    # RESTART_LIMIT failed restarts in a row the revision is marked failed. A server that stays
    # up RESTART_STABLE_AFTER seconds ends a crash episode.
    RESTART_LIMIT: ClassVar[int] = 5
    RESTART_BACKOFF: ClassVar[tuple[float, float]] = (0.5, 8.0)
    RESTART_STABLE_AFTER: ClassVar[float] = 30.0
    # Variables of the deploying process a restarted server keeps besides RUNTIME_ENV (names; a
    # trailing "_" is a prefix), e.g. a backend's own settings (``("MLFLOW_",)``).
    RESTART_INHERITED_ENV: ClassVar[tuple[str, ...]] = ()

    # ----------------------------------------------------------------- what a backend defines
    @abstractmethod
    def server_command(self, port: int) -> list[str]:
        """The argv that serves ``self.config`` on 127.0.0.1:port.

        Guarantee the runtime relies on: the process listens on exactly that address, answers
        ``config.health_method config.health_path`` with 200 only once it can predict, and,
        when it cannot serve, exits non-zero with the reason in its last log lines (they
        become the DeploymentError's backend message). It runs without a shell; the runtime
        starts, supervises, restarts and ends it (with its children), and puts the relay in
        front of it, so it never binds the public port itself.

        Args:
            port: private port.

        Returns:
            argv.
        """

    def check_serving(self, base_url: str) -> None:
        """A backend's own check, after health answered, that the new server serves what the
        config asks for (e.g. an LLM server lists the served model). Default: nothing.

        Args:
            base_url: the new server's private base URL.

        Raises:
            DeploymentError: it does not serve it (the new server is then torn down).
        """

    def direct_server_command(self, handoff: Path) -> list[str]:
        """The argv that serves ``self.config`` on the front's listening socket, received over
        the Unix socket ``handoff`` (flavors with SUPPORTS_DIRECT_DATA_PATH).

        Args:
            handoff: the front's handoff socket.

        Returns:
            argv.
        """
        raise NotImplementedError(f"flavor {self.FLAVOR} has no direct data path")

    def direct_server_ready(self, log: Path) -> bool:
        """Whether a direct-data-path server accepts on the socket now (it cannot be probed
        apart from the front, which accepts on the same socket meanwhile).

        Args:
            log: its log.

        Returns:
            True once every worker serves.
        """
        raise NotImplementedError(f"flavor {self.FLAVOR} has no direct data path")

    @property
    def direct_data_path(self) -> bool:
        """Whether the config asks for the direct data path (``data_path="direct"``)."""
        return getattr(self.config, "data_path", "relay") == "direct"

    def failure_cause(self, log: Path) -> str:
        """The backend's one-line error in a failed server's log (first line of the error).

        Args:
            log: the server's log.

        Returns:
            The line, or "" if the log shows none.
        """
        return proc.failure_cause(log)

    def server_env(self) -> dict[str, str]:
        """The server's environment: ours, the venv's bin on PATH, the config's env resolved.

        Returns:
            An environment dict (contains resolved secrets: never log it).
        """
        return proc.env_with_venv_path(secrets.resolve_mapping(self.config.env))

    # ----------------------------------------------------------------- API key
    def api_key_value(self) -> str | None:
        """The resolved API key of this deployment (None without one); resolved once per
        reference and remembered for redaction.

        Returns:
            The key, or None.
        """
        ref = self.config.api_key
        if not ref:
            return None
        if self._api_key is None or self._api_key[0] != ref:
            self._api_key = (ref, secrets.resolve(ref))
        return self._api_key[1]

    def auth_headers(self) -> dict[str, str]:
        """``Authorization: Bearer <key>`` when the deployment has an API key.

        Returns:
            Headers for requests to the URL.
        """
        key = self.api_key_value()
        return {"Authorization": f"Bearer {key}"} if key else {}

    def curl_auth(self) -> str:
        """The curl header that authenticates, with the key as ``$ZMD_API_KEY`` (never its value).

        Returns:
            A curl option, or "".
        """
        return ' -H "Authorization: Bearer $ZMD_API_KEY"' if self.config.api_key else ""

    def restart_command(
        self, server: proc.ProcessHandle, argv: list[str], env: dict[str, str], port: int
    ) -> tuple[list[str], dict[str, str]]:
        """What the front runs to restart this revision's server after it died (default: the
        command and environment it was started with).

        A backend whose command is a wrapper that prepares and then runs the real server can
        return that server's own command, so that a restart skips the wrapper.

        Args:
            server: the running, ready server.
            argv: its command.
            env: its environment (resolved secrets: never log it).
            port: its private port.

        Returns:
            (argv, env).
        """
        return argv, env

    def restart_env(self, env: dict[str, str]) -> dict[str, str]:
        """The environment the front restarts the server with, kept in the supervision spec
        (a 0600 file): the runtime's variables (``RUNTIME_ENV``), the flavor's
        (``RESTART_INHERITED_ENV``), the configured ``env`` (secrets resolved) and whatever the
        flavor or the server's wrapper set or changed; never the rest of the deploying
        process's environment (e.g. its cloud credentials).

        Args:
            env: the environment the running server was started with.

        Returns:
            The subset to restart it with (contains resolved secrets: never log it).
        """
        return restart_env(env, set(self.config.env), self.RESTART_INHERITED_ENV)

    # ----------------------------------------------------------------- paths
    @property
    def workdir(self) -> Path:
        """This deployment's directory."""
        return zmd_home() / "local" / self.FLAVOR / self.deployment_name

    _preferred_port: int | None = PrivateAttr(default=None)

    def seed_from(self, recorded: DeploymentService) -> None:
        """Re-created deployments take the recorded URL's port back when it is free.

        Args:
            recorded: the service as a past run recorded it.
        """
        if isinstance(recorded, LocalProcessService):
            self._preferred_port = recorded.status.public_port

    # ----------------------------------------------------------------- relay
    def _relay_alive(self) -> bool:
        return self.status.relay is not None and self.status.relay.is_alive()

    def _public_port(self) -> int:
        """The port the front is to listen on (0: a free one), checked to be free.

        Raises:
            PortInUseError: the pinned or recorded port is taken; the hint is what works: the
                deploy step's (or config's) ``port=`` where nothing is deployed yet (a failed
                first deploy leaves no deployment to start), else also ``zmd models start
                --port``.
        """
        host = self.config.host
        port = self.config.port or self.status.public_port or 0
        preferred = self._preferred_port
        if not port and preferred and port_is_free(host, preferred):
            port = preferred
        if port and not port_is_free(host, port):
            pinned = "pinned" if self.config.port else "recorded"
            free = f"free port {port} (e.g. `lsof -i :{port}`)"
            if not self.status.config_hash:
                hint = (
                    f"{free}, or deploy with another `port=` in the deploy step (or its "
                    "config), or none for a free port. Nothing was deployed: there is no "
                    f"deployment '{self.deployment_name}' to start yet."
                )
            else:
                hint = (
                    f"{free}, or move the deployment: `zmd models start "
                    f"{self.deployment_name} --port <free port>` or the deploy step's `port=`."
                )
            raise PortInUseError(
                f"Port {port} ({pinned} for deployment '{self.deployment_name}') is already "
                f"in use on {host}.",
                deployment_name=self.deployment_name,
                hint=hint,
            )
        return port

    def _ensure_relay(self, target: int | None) -> None:
        if self._relay_alive():
            return
        host = self.config.host
        port = self._public_port()
        private_dir(self.workdir)
        metrics_port = self.config.metrics_port or self.status.metrics_port or 0
        if metrics_port and not port_is_free("127.0.0.1", metrics_port):
            metrics_port = 0 if not self.config.metrics_port else metrics_port
        handle, info = start_front(
            workdir=self.workdir,
            deployment_name=self.deployment_name,
            host=host,
            port=port,
            metrics_port=metrics_port,
            target=target,
            target_revision=self.status.config_hash,
            # Resolved before anything starts: a missing secret fails here.
            api_key=self.api_key_value(),
        )
        self.status.relay = handle
        self.status.public_port = int(info["port"])
        self.status.control_port = int(info["control_port"])
        self.status.metrics_port = int(info.get("metrics_port") or 0) or None
        self.status.url = f"http://{_url_host(host)}:{self.status.public_port}"

    def _detach_front_if_moved(
        self,
    ) -> tuple[proc.ProcessHandle | None, int | None, int | None, str | None] | None:
        """If the config pins another port or host than the running front's, forget the
        running front (returned, to restore or stop later) so that a new one starts."""
        if not self._relay_alive() or not self.status.url:
            return None
        pinned = self.config.port is not None and self.config.port != self.status.public_port
        moved_host = not self.status.url.startswith(f"http://{_url_host(self.config.host)}:")
        if not (pinned or moved_host):
            return None
        front = (
            self.status.relay,
            self.status.control_port,
            self.status.public_port,
            self.status.url,
        )
        self.status.relay = None
        self.status.control_port = None
        self.status.public_port = None
        return front

    def _restore_front(
        self, front: tuple[proc.ProcessHandle | None, int | None, int | None, str | None] | None
    ) -> None:
        """Records a front that `_detach_front_if_moved` set aside as the deployment's again."""
        if front is not None:
            (
                self.status.relay,
                self.status.control_port,
                self.status.public_port,
                self.status.url,
            ) = front

    def move_port(self, port: int) -> None:
        """Moves the deployment's URL to ``port``; see DeploymentService.move_port.

        A running deployment gets a new front on ``port`` (its server keeps running; the old
        front is stopped once the new one listens); a stopped one starts there. A config that
        pins another port is re-pinned to ``port``.

        Args:
            port: the new public port.

        Raises:
            ConfigurationError: the port is out of range.
            PortInUseError: the port is taken; nothing changed.
        """
        if not 0 < port < 65536:
            raise ConfigurationError(f"port {port} is out of range 1-65535.")
        if self._relay_alive() and self.status.public_port == port:
            return
        if self._relay_alive() and self.status.direct:
            raise ConfigurationError(
                f"Deployment '{self.deployment_name}' serves on the direct data path: its "
                "server holds the port, so the URL cannot move while it runs.",
                deployment_name=self.deployment_name,
                hint=f"`zmd models stop {self.deployment_name}`, then "
                f"`zmd models start {self.deployment_name} --port {port}`.",
            )
        if not port_is_free(self.config.host, port):
            raise PortInUseError(
                f"Port {port} is already in use on {self.config.host}.",
                deployment_name=self.deployment_name,
                hint="choose another port.",
            )
        old_config = self.config
        if self.config.port is not None and self.config.port != port:
            self.config = self.config.model_copy(update={"port": port})
        if not self._relay_alive():
            self.status.public_port = port
            return
        self._supervision()
        server_ok = self.status.server is not None and self.status.server.is_alive()
        front = (self.status.relay, self.status.control_port, self.status.public_port)
        self.status.relay, self.status.control_port, self.status.public_port = None, None, port
        try:
            self._ensure_relay(target=self.status.server_port if server_ok else None)
        except BaseException:
            self.config = old_config
            self.status.relay, self.status.control_port, self.status.public_port = front
            raise
        if front[0] is not None:
            front[0].terminate(5)

    def _relay_call(self, msg: dict[str, Any], timeout: float = 30) -> dict[str, Any]:
        assert self.status.control_port is not None
        # The token lives only in the relay's 0600 ready file, never in the service store.
        token = str(read_ready_file(self.workdir / "relay.json").get("token", ""))
        reply = control_request(self.status.control_port, token, msg, timeout)
        if not reply.get("ok"):
            raise DeploymentError(
                f"The relay of '{self.deployment_name}' refused {msg.get('cmd')}: {reply}",
                deployment_name=self.deployment_name,
            )
        return reply

    def _switch(self, port: int) -> dict[str, Any]:
        """The `switch` command: the new server and this revision's API key, moved together
        (the revision labels the server's metrics)."""
        return {
            "cmd": "switch",
            "port": port,
            "api_key": self.api_key_value(),
            "revision": self.config.config_hash(),
        }

    @property
    def metrics_url(self) -> str | None:
        """The relay's Prometheus metrics URL (loopback), while the front runs (on the direct
        data path it serves the server's own counts, ``metrics_dir``)."""
        if not self.status.metrics_port:
            return None
        return f"http://127.0.0.1:{self.status.metrics_port}/metrics"

    def metrics_dir(self, revision: str) -> Path:
        """Where a direct-data-path server of `revision` counts its requests (prometheus_client
        multiprocess files; the front reads them and folds them in once the server retires).

        Args:
            revision: a config hash.

        Returns:
            The folder.
        """
        return self.workdir / METRICS_DIR / revision

    def _fold_metrics(self, keep: str | None = None) -> None:
        """Folds the counts of retired direct servers into the front's own (their folders go).

        Args:
            keep: the revision whose server still counts (default: the serving one when it is
                on the direct data path).
        """
        if keep is None:
            keep = self.config.config_hash() if self.status.direct else ""
        if (self.workdir / METRICS_DIR).is_dir() and self._relay_alive():
            with contextlib.suppress(DeploymentError, OSError, ValueError):
                self._relay_call({"cmd": "fold", "keep": keep}, timeout=10)

    def _stop_relay(self) -> None:
        if self.status.relay is not None:
            self.status.relay.terminate(5)
        self.status.relay = None
        self.status.control_port = None

    # ----------------------------------------------------------------- server
    def _health_host(self) -> str:
        """Where the front's listening socket answers from this machine."""
        host = self.config.host
        return "127.0.0.1" if host in ("0.0.0.0", "::") or is_loopback(host) else host

    def _start_server(
        self,
        timeout: float,
        after_spawn: Callable[[], None] | None = None,
        direct: bool = False,
    ) -> tuple[proc.ProcessHandle, int, Path]:
        """Starts a server for ``self.config`` on a private port and waits until it is ready.

        ``after_spawn`` runs while the server loads; if it raises, the server is ended. The front
        supervises the server once :meth:`_supervise` recorded it (after the switch).

        ``direct``: the server accepts on the front's listening socket instead (the direct
        data path, when no other server serves: ``after_spawn`` starts the front and takes it
        out of the data path, so that the server is the only one answering the public port,
        where it is checked); the returned port is the public one.
        """
        port = 0 if direct else free_port()
        log = self.workdir / f"server-{self.config.config_hash()}-{int(time.time())}.log"
        env = self.server_env()
        if direct:
            argv = self.direct_server_command(self.workdir / HANDOFF_SOCKET)
        else:
            argv = self.server_command(port)
        handle = proc.spawn(argv, log, env=env, cwd=self.workdir)
        base = f"http://127.0.0.1:{port}"
        smoke = None
        if self.config.smoke_input is not None:

            def smoke() -> None:
                import requests

                headers, body = self.format_request(self.config.smoke_input)
                r = requests.post(
                    base + self.predict_path(), data=body, headers=headers, timeout=30
                )
                if r.status_code >= 400:
                    raise RuntimeError(f"HTTP {r.status_code}: {secrets.redact(r.text[:2000])}")

        try:
            if after_spawn is not None:
                after_spawn()
            if direct:
                assert self.status.public_port is not None
                port = self.status.public_port
                base = f"http://{_url_host(self._health_host())}:{port}"
            wait_until_ready(
                deployment_name=self.deployment_name,
                process=handle,
                log_path=log,
                health_url=base + self.config.health_path,
                health_method=self.config.health_method,
                timeout=timeout,
                smoke=smoke,
                keep_log=proc.keep_failed_log,
                cause_of=self.failure_cause,
            )
            self.check_serving(base)
        except BaseException:
            handle.terminate(5)
            raise
        restart_argv, restart_env = self.restart_command(handle, argv, env, port)
        self._pending_spec = self._spec(handle, restart_argv, restart_env, env, port, log, timeout)
        if direct:
            self._pending_spec["health_host"] = self._health_host()
        return handle, port, log

    def _spec(
        self,
        handle: proc.ProcessHandle,
        restart_argv: list[str],
        restart_env: dict[str, str],
        env: dict[str, str],
        port: int,
        log: Path,
        timeout: float,
    ) -> dict[str, Any]:
        """The supervision spec of a ready server (see local/supervisor.py)."""
        return {
            "deployment": self.deployment_name,
            "argv": restart_argv,
            # Resolved secrets: this file is mode 0600, never a command line.
            "env": self.restart_env(restart_env),
            "cwd": str(self.workdir),
            "port": port,
            "server": handle.model_dump(mode="json"),
            "log_path": str(log),
            "health_path": self.config.health_path,
            "health_method": self.config.health_method,
            "config_hash": self.config.config_hash(),
            "ready_timeout": timeout,
            "max_restarts": self.RESTART_LIMIT,
            "backoff_initial": self.RESTART_BACKOFF[0],
            "backoff_max": self.RESTART_BACKOFF[1],
            "stable_after": self.RESTART_STABLE_AFTER,
            # Scrubbed from the log tail the supervisor records and from the fast `logs`.
            "redact": [
                env[k]
                for k, v in self.config.env.items()
                if k in env and secrets.is_secret_reference(v)
            ]
            + ([key] if (key := self.api_key_value()) else []),
        }

    def _handoff(self, timeout: float) -> None:
        """Takes the relay out of the data path (``data_path="direct"``): a second server of
        the serving revision accepts on the front's listening socket itself, the supervisor
        watches it, the relay stops accepting (its kept-alive connections end after their next
        answer) and the revision's private server is stopped.

        The serving revision was started and verified on its private port and serves through
        the relay meanwhile. If the direct server does not come up, it is ended and the relay
        stays in the path (a warning; the deployment serves either way).

        Args:
            timeout: seconds for the direct server to start.
        """
        private, private_port = self.status.server, self.status.server_port
        if self.status.direct or private is None or self.status.public_port is None:
            return
        log = self.workdir / f"server-{self.config.config_hash()}-{int(time.time())}-direct.log"
        env = self.server_env()
        argv = self.direct_server_command(self.workdir / HANDOFF_SOCKET)
        handle = proc.spawn(argv, log, env=env, cwd=self.workdir)
        deadline = time.monotonic() + timeout
        while not self.direct_server_ready(log):
            proc.reap_children()
            if not handle.is_alive() or time.monotonic() > deadline:
                handle.terminate(5)
                logger.warning(
                    "The direct data path of '%s' did not start (%s); the relay stays in the "
                    "data path.",
                    self.deployment_name,
                    self.failure_cause(log) or "no server within the timeout",
                )
                return
            time.sleep(0.05)
        spec = self._spec(handle, argv, env, env, self.status.public_port, log, timeout)
        spec["health_host"] = self._health_host()
        write_spec(self.workdir / SPEC_FILE, spec)  # before the private server goes
        self.status.restarts = 0
        self.status.server, self.status.server_port = handle, None
        self.status.log_path = str(log)
        self.status.direct = True
        try:
            reply = self._relay_call(
                {"cmd": "accept", "on": False, "timeout": DRAIN_TIMEOUT},
                timeout=DRAIN_TIMEOUT + 10,
            )
            if reply.get("left"):
                logger.info("Closed %s idle connection(s) of the relay.", reply["left"])
        except (DeploymentError, OSError, ValueError) as e:
            logger.warning("The relay did not step out of the data path cleanly (%s).", e)
        if private_port is not None:
            with contextlib.suppress(DeploymentError, OSError, ValueError):
                self._relay_call({"cmd": "drain", "port": private_port, "timeout": DRAIN_TIMEOUT})
        private.terminate(DRAIN_TIMEOUT)

    def _ensure_relay_out(self, target: int | None) -> None:
        """Starts the front if needed and takes it out of the data path (a direct server is
        about to accept on its socket)."""
        self._ensure_relay(target=target)
        self._relay_call({"cmd": "accept", "on": False, "timeout": 0})

    def _step_in(self) -> None:
        """Puts the relay back into the data path (before the direct server is retired)."""
        if self.status.direct and self._relay_alive():
            self._relay_call({"cmd": "accept", "on": True})

    _pending_spec: dict[str, Any] | None = PrivateAttr(default=None)

    def _supervise(self) -> None:
        """Hands the server just switched to over to the front's supervisor (a new revision:
        its restart count starts over). Written before any old server is retired, so that the
        supervisor never mistakes a retirement for a crash."""
        spec, self._pending_spec = self._pending_spec, None
        if spec is not None:
            write_spec(self.workdir / SPEC_FILE, spec)
        self.status.restarts = 0

    def _supervision(self) -> dict[str, Any] | None:
        """The front's supervisor record for the recorded server, its current server adopted.

        Returns:
            The record (``supervisor.json``) or None when no supervisor watches this revision.
        """
        if self.status.server is None:
            return None
        sup = supervision_of(self.status.server.model_dump(mode="json"), self.workdir)
        if sup is None:
            return None
        if sup.get("server"):
            self.status.server = proc.ProcessHandle(**sup["server"])
        self.status.restarts = int(sup.get("restarts", 0))
        return sup

    def _wait_for_supervisor(self, timeout: float) -> dict[str, Any] | None:
        """While the front restarts the server, waits (bounded) until it is done."""
        deadline = time.monotonic() + timeout
        while True:
            sup = self._supervision()
            if sup is None or sup.get("state") != "restarting" or not self._relay_alive():
                return sup
            if time.monotonic() > deadline:
                return sup
            time.sleep(0.2)

    def _end_orphans(self) -> None:
        """Ends processes of this deployment that no record knows (a deploy killed midway).

        They are ours: started in this deployment's directory (servers run there, the relay
        names its ready file there). Recorded processes are left alone; callers hold the lock.
        """
        known = [self.status.server, self.status.relay, self.status.canary_server]
        found = orphans(
            self.workdir,
            [h.model_dump() if h is not None else None for h in known],
            proc.python_executable(),
        )
        if found:
            logger.warning(
                "Ending %d unrecorded process(es) of '%s' left by an interrupted deploy.",
                len(found),
                self.deployment_name,
            )
            proc.terminate_all(found, 5)

    # ----------------------------------------------------------------- hooks
    def provision_revision(self, timeout: float) -> None:
        """See DeploymentService.provision_revision.

        Args:
            timeout: seconds.
        """
        private_dir(self.workdir)
        self._supervision()
        self._end_orphans()
        old_server, old_port = self.status.server, self.status.server_port
        old_alive = old_server is not None and old_server.is_alive()
        # A new revision that pins another address needs a new front; the old front keeps
        # serving the old address until the new revision is ready.
        old_front = self._detach_front_if_moved()
        had_relay = self._relay_alive()
        if not had_relay:
            # A taken port fails before a server spends seconds loading the model.
            try:
                self._public_port()
            except BaseException:
                self._restore_front(old_front)
                raise
        if self.direct_data_path and not old_alive:
            # Nothing serves: the new revision's server takes the socket at once (it is
            # checked on the public port, where the front stops accepting meanwhile).
            try:
                handle, port, log = self._start_server(
                    timeout, after_spawn=lambda: self._ensure_relay_out(None), direct=True
                )
            except BaseException:
                if not had_relay or old_front is not None:
                    self._stop_relay()
                elif self._relay_alive():
                    with contextlib.suppress(DeploymentError, OSError, ValueError):
                        self._relay_call({"cmd": "accept", "on": True})
                self._restore_front(old_front)
                raise
            self._supervise()
            if old_front is not None and old_front[0] is not None:
                old_front[0].terminate(5)
            self.status.server, self.status.server_port, self.status.log_path = (
                handle,
                None,
                str(log),
            )
            self.status.direct = True
            self.status.revision += 1
            self._fold_metrics()
            make_tree_private(self.workdir)
            self.mark_ready()
            return
        try:
            try:
                # The front starts while the new server loads (it costs a Python start, ~0.1 s);
                # a busy pinned port still fails at once, ending the server just started.
                handle, port, log = self._start_server(
                    timeout,
                    after_spawn=lambda: self._ensure_relay(target=old_port if old_alive else None),
                )
            except BaseException:
                if not had_relay and (old_front is not None or not old_alive):
                    self._stop_relay()
                raise
            try:
                self._relay_call(self._switch(port))
                # A direct server serving now: the relay accepts again (to the new revision)
                # before that server is retired.
                self._step_in()
            except BaseException:
                self._pending_spec = None
                handle.terminate(5)
                raise
            self._supervise()
        except BaseException:
            self._restore_front(old_front)
            raise
        # From here on the new revision serves: retiring the old one cannot fail the deploy.
        if old_alive and old_server is not None and old_port != port:
            if old_front is None and old_port is not None:
                try:
                    self._relay_call({"cmd": "drain", "port": old_port, "timeout": DRAIN_TIMEOUT})
                except (DeploymentError, OSError, ValueError) as e:
                    logger.warning("Draining the old revision failed (%s); stopping it now.", e)
            old_server.terminate(DRAIN_TIMEOUT)
        if old_front is not None and old_front[0] is not None:
            old_front[0].terminate(5)
        self.status.server, self.status.server_port, self.status.log_path = handle, port, str(log)
        self.status.direct = False
        self.status.revision += 1
        if self.direct_data_path:
            self._handoff(timeout)
        self._fold_metrics()
        make_tree_private(self.workdir)
        self.mark_ready()

    def start_backend(self, timeout: float) -> None:
        """See DeploymentService.start_backend.

        Args:
            timeout: seconds.
        """
        sup = self._supervision()
        if sup is not None and sup.get("state") == "restarting":
            self._wait_for_supervisor(timeout)
        server_ok = self.status.server is not None and self.status.server.is_alive()
        if server_ok and self._relay_alive():
            self.mark_ready()
            return
        if server_ok and self.status.direct and self.status.server is not None:
            # A direct server without its front (the front died): it holds the port; both
            # start afresh.
            self.status.server.terminate(DRAIN_TIMEOUT)
            server_ok = False
        self._end_orphans()
        if not server_ok:
            self.status.server = None
            # No server counts now: a live front keeps what they counted, a new one starts at 0.
            if self._relay_alive():
                self._fold_metrics(keep="")
            else:
                shutil.rmtree(self.workdir / METRICS_DIR, ignore_errors=True)
        direct = not server_ok and self.direct_data_path
        if direct:
            self._ensure_relay_out(None)
        else:
            self._ensure_relay(target=self.status.server_port if server_ok else None)
        if not server_ok:
            try:
                handle, port, log = self._start_server(timeout, direct=direct)
            except BaseException:
                self._stop_relay()
                raise
            if not direct:
                self._relay_call(self._switch(port))
            self._supervise()
            self.status.server, self.status.server_port = handle, None if direct else port
            self.status.log_path = str(log)
            self.status.direct = direct
        make_tree_private(self.workdir)
        self.mark_ready()

    def stop_backend(self, timeout: float) -> None:
        """See DeploymentService.stop_backend.

        Args:
            timeout: seconds.
        """
        # The front first: its supervisor would take the server's exit for a crash.
        self._stop_relay()
        self._supervision()
        if self.status.server is not None:
            self.status.server.terminate(min(timeout, DRAIN_TIMEOUT))
        self.status.server = None
        self.status.direct = False
        # The front's counters ended with it; the servers' files go too (a start counts anew).
        shutil.rmtree(self.workdir / METRICS_DIR, ignore_errors=True)
        self._end_canary_server()
        self.admin_state = ServiceState.INACTIVE
        self.status.update_state(ServiceState.INACTIVE, "")
        self.status.clear_error()

    def delete_backend(self, timeout: float) -> None:
        """See DeploymentService.delete_backend.

        Args:
            timeout: seconds.
        """
        self.stop_backend(timeout)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def discard_backend(self, timeout: float) -> None:
        """See DeploymentService.discard_backend: all but the failed revisions' logs go.

        Args:
            timeout: seconds.
        """
        self.stop_backend(timeout)
        if not self.workdir.is_dir():
            return
        for entry in self.workdir.iterdir():
            if entry.name == "failed" and entry.is_dir():
                continue
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)

    # ----------------------------------------------------------------- canaries
    def set_traffic_split(
        self,
        stable: DeploymentConfig,
        candidate: DeploymentConfig | None,
        candidate_percent: int,
        timeout: float,
    ) -> None:
        """See DeploymentService.set_traffic_split: the candidate's server runs beside the
        stable one and the relay routes ``candidate_percent`` % of requests to it.

        ``candidate=None`` ends a canary: with ``stable`` the recorded revision (rollback) the
        candidate is drained and stopped; with ``stable`` the candidate's config (promotion)
        the candidate's server becomes the deployment's and the old one is drained and stopped.

        Args:
            stable: the stable revision.
            candidate: the candidate revision (None: stable only).
            candidate_percent: the candidate's share, 0-100.
            timeout: seconds to wait until a new candidate's server is ready.

        Raises:
            DeploymentError: the candidate did not start, or the relay refused; what served
                before still serves.
        """
        if self.status.direct or getattr(candidate, "data_path", "relay") == "direct":
            raise ConfigurationError(
                f"Deployment '{self.deployment_name}' uses the direct data path "
                "(data_path='direct'): requests bypass the front, which can neither split "
                "them between two revisions nor measure them, so no canary or progressive "
                "rollout can run.",
                deployment_name=self.deployment_name,
                hint="deploy with data_path='relay' (the default) for canaries and rollouts.",
            )
        if not self._relay_alive() or self.status.server_port is None:
            raise DeploymentError(
                f"Deployment '{self.deployment_name}' is not serving: no traffic to split.",
                deployment_name=self.deployment_name,
                hint=f"`zmd models start {self.deployment_name}` first.",
            )
        assert isinstance(stable, LocalDeploymentConfig)
        if candidate is None:
            if stable.config_hash() == self.config.config_hash():
                self._rollback_canary()
            else:
                self._promote_canary(stable)
            return
        assert isinstance(candidate, LocalDeploymentConfig)
        if not self._canary_alive(candidate):
            self._end_canary_server()
            self._start_canary(candidate, timeout)
        assert self.status.canary_port is not None
        try:
            self._relay_call(
                {
                    "cmd": "split",
                    "port": self.status.server_port,
                    "revision": self.config.config_hash(),
                    "candidate": self.status.canary_port,
                    "candidate_revision": candidate.config_hash(),
                    "percent": candidate_percent,
                }
            )
        except BaseException:
            self._relay_call(self._switch(self.status.server_port))
            self._end_canary_server()
            raise

    def _canary_alive(self, candidate: DeploymentConfig) -> bool:
        running = self.status.canary_server is not None and self.status.canary_server.is_alive()
        recorded = self.status.canary_config
        return (
            running
            and bool(recorded)
            and (type(candidate).model_validate(recorded).config_hash() == candidate.config_hash())
        )

    def _start_canary(self, candidate: LocalDeploymentConfig, timeout: float) -> None:
        """Starts the candidate's server (not yet routed to); its restart spec is kept aside
        (0600) until a promotion hands it to the supervisor."""
        stable = self.config
        self.config = candidate
        try:
            handle, port, log = self._start_server(timeout)
        finally:
            self.config = stable
        spec, self._pending_spec = self._pending_spec, None
        if spec is not None:
            write_spec(self.workdir / _CANARY_SPEC, spec)
        self.status.canary_server, self.status.canary_port = handle, port
        self.status.canary_log_path = str(log)
        make_tree_private(self.workdir)

    def _end_canary_server(self) -> None:
        if self.status.canary_server is not None:
            self.status.canary_server.terminate(DRAIN_TIMEOUT)
        self.status.canary_server = None
        self.status.canary_port = None
        self.status.canary_log_path = None
        (self.workdir / _CANARY_SPEC).unlink(missing_ok=True)

    def _rollback_canary(self) -> None:
        assert self.status.server_port is not None
        self._relay_call(self._switch(self.status.server_port))
        port = self.status.canary_port
        if port is not None:
            with contextlib.suppress(DeploymentError, OSError, ValueError):
                self._relay_call({"cmd": "drain", "port": port, "timeout": DRAIN_TIMEOUT})
        self._end_canary_server()

    def _promote_canary(self, candidate: LocalDeploymentConfig) -> None:
        server, port = self.status.canary_server, self.status.canary_port
        if server is None or port is None or not server.is_alive():
            raise DeploymentError(
                f"The candidate revision {candidate.config_hash()} of '{self.deployment_name}' "
                "is not running: nothing to promote.",
                deployment_name=self.deployment_name,
                hint=f"`zmd models rollback {self.deployment_name}`, then deploy it again.",
            )
        old_server, old_port = self.status.server, self.status.server_port
        stable = self.config
        self.config = candidate  # the switch carries the candidate's revision and API key
        try:
            self._relay_call(self._switch(port))
        except BaseException:
            self.config = stable
            raise
        spec_path = self.workdir / _CANARY_SPEC
        if spec_path.exists():  # the supervisor watches the new revision from now on
            write_spec(self.workdir / SPEC_FILE, json.loads(spec_path.read_text()))
            spec_path.unlink(missing_ok=True)
        self.status.restarts = 0
        self.status.server, self.status.server_port = server, port
        self.status.log_path = self.status.canary_log_path
        self.status.canary_server = self.status.canary_port = None
        self.status.canary_log_path = None
        if old_port is not None and old_port != port:
            with contextlib.suppress(DeploymentError, OSError, ValueError):
                self._relay_call({"cmd": "drain", "port": old_port, "timeout": DRAIN_TIMEOUT})
        if old_server is not None:
            old_server.terminate(DRAIN_TIMEOUT)

    def read_revision_metrics(self, window: float | None = None) -> dict[str, RevisionMetrics]:
        """Requests, errors and latency per revision, counted by the relay.

        Args:
            window: seconds: the counts of about the last `window` seconds (the relay keeps
                snapshots every 2 s for 15 minutes; ``window_s`` says what was covered);
                None: since the relay started.

        Returns:
            config hash -> metrics (revisions that served through this relay).

        Raises:
            DeploymentError: the front is not running.
        """
        if not self._relay_alive():
            raise DeploymentError(
                f"Deployment '{self.deployment_name}' is not running: no metrics to read.",
                deployment_name=self.deployment_name,
            )
        reply = self._relay_call({"cmd": "metrics", "window": window or 0}, timeout=10)
        return metrics_from_reply(reply, window is not None)

    def check_status(self) -> tuple[ServiceState, str]:
        """Reads process liveness (cheap: no HTTP), so listing many deployments is fast.

        Returns:
            (state, message).
        """
        sup = self._supervision()
        state, message = local_state(
            self.deployment_name,
            self.status.server.model_dump() if self.status.server else None,
            self.status.relay.model_dump() if self.status.relay else None,
            sup,
        )
        return ServiceState(state), message

    def get_logs(self, follow: bool = False, tail: int | None = None) -> Generator[str, bool, None]:
        """Yields the server's log lines (redacted).

        Args:
            follow: keep yielding new lines while the server runs.
            tail: only the last N lines.

        Yields:
            Lines.
        """
        self._supervision()
        if not self.status.log_path:
            return
        # Learn this deployment's secret values, so that redaction works in any process
        # (e.g. `zmd models logs`), not only in the one that deployed.
        with contextlib.suppress(Exception):
            secrets.resolve_mapping(self.config.env)
            self.api_key_value()
        yield from log_lines(
            Path(self.status.log_path),
            tail,
            follow,
            lambda: self.status.server is not None and self.status.server.is_alive(),
            secrets.redact,
        )


def metrics_from_reply(reply: dict[str, Any], windowed: bool) -> dict[str, RevisionMetrics]:
    """Per-revision metrics from the relay's ``metrics`` reply.

    Args:
        reply: ``{"now": ..., "then": ..., "span": s, "bounds": [...]}`` (relay_metrics).
        windowed: the window between "then" and "now" (else the cumulative "now").

    Returns:
        revision -> metrics.
    """
    bounds = [float(b) for b in reply.get("bounds", [])]
    out: dict[str, RevisionMetrics] = {}
    for rev, counters in dict(reply.get("now", {})).items():
        now = RevisionMetrics.from_counters(rev, counters, bounds)
        if windowed:
            then = reply.get("then", {}).get(rev)
            earlier = RevisionMetrics.from_counters(rev, then, bounds) if then else None
            now = now.since(earlier, float(reply.get("span", 0)) or None)
        out[rev] = now
    return out


_CANARY_SPEC = "canary-supervise.json"


def _url_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "") else host


__all__ = [
    "LocalDeploymentConfig",
    "LocalDeploymentStatus",
    "LocalProcessService",
    "is_loopback",
    "make_tree_private",
    "private_dir",
    "zmd_home",
]

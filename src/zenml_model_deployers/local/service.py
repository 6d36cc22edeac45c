"""LocalProcessService: the base of every local backend (MLflow, BentoML, vLLM): the one class
a local flavor's author reads.

A local deployment is two processes, both started directly (no daemon double-fork):

- the front (``local/relay.py``), which owns the deployment's public port and so its URL;
- the current revision's server, on a private loopback port.

A flavor defines ``server_command`` (and, where it needs them, the other hooks in the first
section of the class); the runtime does the rest, in small collaborators the service builds per
call (they hold no state of their own: everything lives in the service's config and status,
which ZenML stores):

- ``local/revisions.py``: the revision lifecycle: start a server, verify it, switch the front to
  it, retire the old one; start and stop a deployment;
- ``local/front.py``: the front process and its control channel;
- ``local/supervision.py``: the supervision spec the front restarts a crashed server from;
- ``local/canary.py``: canaries (a candidate beside the stable revision, promotion, rollback);
- ``local/config.py``: ``LocalDeploymentConfig`` and ``LocalDeploymentStatus`` (re-exported here,
  where ZenML recorded their source paths).

An update starts the new server, waits until it is ready, switches the relay, then retires
the old server gracefully. A failure at any point tears the new server down and leaves the
old one serving. Files (logs, the relay's ready file) live under
``<ZenML config dir>/zmd/local/<flavor>/<deployment>/``, private to the user (folders 0700,
files 0600): logs can hold request data, the ready file holds the relay's control token.

An optional ``api_key`` (a ZenML secret reference) is enforced by the relay on every request;
a deployment bound to a non-loopback address must have one, or say ``allow_unauthenticated``.
The relay counts requests, errors and latency per revision (``read_revision_metrics``;
Prometheus on the metrics port).
"""

from __future__ import annotations

import contextlib
import shutil
from abc import abstractmethod
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import ClassVar

from pydantic import PrivateAttr
from zenml.enums import ServiceState

from zenml_model_deployers import secrets
from zenml_model_deployers.errors import ConfigurationError, PortInUseError
from zenml_model_deployers.local import gate
from zenml_model_deployers.local import process as proc
from zenml_model_deployers.local.canary import Canary
from zenml_model_deployers.local.config import (
    LocalDeploymentConfig,
    LocalDeploymentStatus,
    is_loopback,
    private_dir,
    zmd_home,
)
from zenml_model_deployers.local.front import DRAIN_TIMEOUT, Front, metrics_from_reply
from zenml_model_deployers.local.launch import (
    METRICS_DIR,
    make_tree_private,
    port_is_free,
    restart_env,
)
from zenml_model_deployers.local.revisions import Revisions
from zenml_model_deployers.local.state import local_state, log_lines
from zenml_model_deployers.local.supervision import adopt_supervision
from zenml_model_deployers.metrics import RevisionMetrics
from zenml_model_deployers.service import DeploymentService, TrafficSplit


class LocalProcessService(DeploymentService):
    """A deployment served by a local process behind a relay.

    A flavor implements ``server_command`` and, where its server needs them, the other hooks
    under "what a backend defines" below; every other method is the runtime's.
    """

    config: LocalDeploymentConfig
    status: LocalDeploymentStatus

    # Private attributes, never serialised: the resolved API key (its reference and value) and
    # a re-created deployment's recorded port.
    _api_key: tuple[str, str] | None = PrivateAttr(default=None)
    _preferred_port: int | None = PrivateAttr(default=None)

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

    def gated_server_command(self, port: int, handoff: Path, gate: Path) -> list[str]:
        """The argv that serves ``self.config`` on the private ``port`` and, while the file
        ``gate`` exists, also on the front's listening socket, received over the Unix socket
        ``handoff`` (flavors with SUPPORTS_DIRECT_DATA_PATH: a verified server starts serving
        the public port without starting again, ``local/gate.py``; its uvicorn workers serve
        their app through ``local/metering.worker_app``, and the flavor's wrapper takes
        :meth:`gate_args`).

        Args:
            port: the private port.
            handoff: the front's handoff socket.
            gate: the gate file.

        Returns:
            argv.
        """
        raise NotImplementedError(f"flavor {self.FLAVOR} has no direct data path")

    def gate_args(self, handoff: Path, gate: Path) -> list[str]:
        """The options a flavor's server wrapper takes for a gate: the handoff socket, the gate
        file, and where and under which labels the server counts the requests it takes on the
        public socket (the relay does not see them).

        Args:
            handoff: the front's handoff socket.
            gate: the gate file.

        Returns:
            ``--listen-fd-from H --accept-gate G --metrics-dir D --revision R --deployment N``.
        """
        revision = self.config.config_hash()
        return [
            "--listen-fd-from",
            str(handoff),
            "--accept-gate",
            str(gate),
            "--metrics-dir",
            str(self.metrics_dir(revision)),
            "--revision",
            revision,
            "--deployment",
            self.deployment_name,
        ]

    def gate_events(self, log: Path, since: int = 0) -> tuple[int, int]:
        """How often the workers of a server with a gate opened and closed it, by its log from
        byte ``since`` on (``local/gate.py`` logs one line per worker and change; the log grows
        by a line per request, so a whole read of a busy server's log costs more with every
        request it served).

        Args:
            log: its log.
            since: offset in the log.

        Returns:
            (opened, closed).
        """
        try:
            with log.open("rb") as f:
                f.seek(since)
                text = f.read().decode(errors="replace")
        except OSError:
            return 0, 0
        return text.count(gate.OPENED), text.count(gate.CLOSED)

    def wake_gate(self, pid: int) -> None:
        """Makes the workers of the server ``pid`` look at their gate file now, after it was
        created or removed (they look at it by themselves within a short poll otherwise):
        ``gate.wake``.

        Args:
            pid: the server's process.
        """
        gate.wake(pid)

    @property
    def direct_data_path(self) -> bool:
        """Whether the serving revision takes the direct data path: ``data_path="direct"``,
        or the default ``"auto"`` where the direct path is eligible (the flavor has one, no
        ``api_key``, a loopback ``host``: the relay checks keys, and keeps its request limits
        in front of a server reachable from other machines)."""
        path = getattr(self.config, "data_path", "relay")
        return path == "direct" or (
            path == "auto"
            and self.SUPPORTS_DIRECT_DATA_PATH
            and not self.config.api_key
            and is_loopback(self.config.host)
        )

    @property
    def relay_may_step_in(self) -> bool:
        """Whether the front may step into the data path by itself for a canary or progressive
        rollout (every data path but an explicit ``data_path="direct"``)."""
        return getattr(self.config, "data_path", "relay") != "direct"

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

    @contextlib.contextmanager
    def candidate_environment(self) -> Iterator[None]:
        """Around the start of a canary's candidate server, ``self.config`` being the
        candidate's: a flavor whose server environment depends on more than the config (e.g.
        a store it pins per revision, files it makes before a rollout) makes the candidate's
        here, as its rollout does for a new revision, and records in the status what a
        promotion needs (``adopt_candidate``). On failure it leaves nothing of the candidate.
        Default: nothing to make.

        Yields:
            While the candidate's server starts (and is checked).
        """
        yield

    def adopt_candidate(self) -> None:
        """After a promotion, ``self.config`` being the promoted candidate's: the flavor's
        status takes what ``candidate_environment`` recorded for it, and what only the retired
        revision needed goes. Default: nothing.
        """

    def forget_candidate(self) -> None:
        """After a canary ended without a promotion (rollback, stop, a candidate that failed or
        is replaced): what ``candidate_environment`` made for it goes. Default: nothing.
        """

    def secret_values(self) -> list[str]:
        """Secret values of the server's environment besides the resolved references of
        ``config.env`` and the API key (e.g. credentials a caller handed over as values):
        the supervision spec names their variables and the front keeps the values in memory
        only; they are scrubbed from log tails. Default: none.

        Returns:
            The values (never log them).
        """
        return []

    def open_paths(self) -> tuple[str, ...]:
        """Paths the front answers without the API key (GET/HEAD only), e.g. a health route
        that a platform probes unauthenticated. Default: none.

        Returns:
            Exact URL paths (no query).
        """
        return ()

    def closed_paths(self) -> tuple[str, ...]:
        """Paths the front refuses to every client (403), with what lies under them: the
        server's admin routes that only the deploying process may use, on the private port.
        A front started by an earlier version closes none until it is started again.
        Default: none.

        Returns:
            URL paths (no query).
        """
        return ()

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

    def seed_from(self, recorded: DeploymentService) -> None:
        """Re-created deployments take the recorded URL's port back when it is free.

        Args:
            recorded: the service as a past run recorded it.
        """
        if isinstance(recorded, LocalProcessService):
            self._preferred_port = recorded.status.public_port

    # ----------------------------------------------------------------- the runtime's parts
    @property
    def front(self) -> Front:
        """The deployment's front (relay process and control channel), for the current config."""
        # In Front's field order: name, folder, config, status, API key, preferred port,
        # paths open without the key, paths closed to every client.
        return Front(
            self.deployment_name,
            self.workdir,
            self.config,
            self.status,
            self.api_key_value,
            self._preferred_port,
            self.open_paths(),
            self.closed_paths(),
        )

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

    # ----------------------------------------------------------------- DeploymentService hooks
    def provision_revision(self, timeout: float) -> None:
        """See DeploymentService.provision_revision (``Revisions.provision``).

        Args:
            timeout: seconds.
        """
        Revisions(self).provision(timeout)

    def changed_in_place(self, timeout: float) -> None:
        """For a flavor that applied ``self.config`` to the serving server without a restart
        (``Revisions.changed_in_place``): its restart command, metrics label and revision follow.

        Args:
            timeout: seconds a restarted server gets to become ready.
        """
        Revisions(self).changed_in_place(timeout)

    def start_backend(self, timeout: float) -> None:
        """See DeploymentService.start_backend (``Revisions.start``).

        Args:
            timeout: seconds.
        """
        Revisions(self).start(timeout)

    def stop_backend(self, timeout: float) -> None:
        """See DeploymentService.stop_backend: the front, the server and a canary's server end.

        Args:
            timeout: seconds.
        """
        Revisions(self).stop(timeout)
        Canary(self).end()
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
        running = self.front.alive()
        if running and self.status.public_port == port:
            return
        revisions = Revisions(self)
        if running and self.status.direct and revisions.serving_gate() is None:
            raise ConfigurationError(
                f"Deployment '{self.deployment_name}' serves on the direct data path with a "
                "server of an older version that holds the port, so the URL cannot move "
                "while it runs.",
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
        if not running:
            self.status.public_port = port
            return
        adopt_supervision(self.status, self.workdir)
        server_ok = self.status.server is not None and self.status.server.is_alive()
        # On the direct data path the relay steps in on the old port (the server stops
        # accepting there), moves as it does, and steps out on the new port.
        direct = self.status.direct
        revisions.step_in(DRAIN_TIMEOUT)
        front = (self.status.relay, self.status.control_port, self.status.public_port)
        self.status.relay, self.status.control_port, self.status.public_port = None, None, port
        try:
            self.front.ensure(target=self.status.server_port if server_ok else None)
        except BaseException:
            self.config = old_config
            self.status.relay, self.status.control_port, self.status.public_port = front
            if direct:
                revisions.handoff(DRAIN_TIMEOUT)
            raise
        if front[0] is not None:
            front[0].terminate(5)
        if direct:
            revisions.handoff(DRAIN_TIMEOUT)

    # ----------------------------------------------------------------- canaries
    def route_traffic(self, split: TrafficSplit, timeout: float) -> None:
        """See DeploymentService.set_traffic_split: the candidate's server runs beside the
        stable one and the relay routes ``candidate_percent`` % of requests to it.

        ``candidate=None`` ends a canary: with ``stable`` the recorded revision (rollback) the
        candidate is drained and stopped; with ``stable`` the candidate's config (promotion)
        the candidate's server becomes the deployment's and the old one is drained and stopped.

        Args:
            split: the stable revision, the candidate (None: stable only) and its share.
            timeout: seconds to wait until a new candidate's server is ready.

        Raises:
            DeploymentError: the candidate did not start, or the relay refused; what served
                before still serves.
        """
        Canary(self).split(split, timeout)

    # ----------------------------------------------------------------- what runs, its logs, its metrics
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
        return self.front.read_metrics(window)

    def check_status(self) -> tuple[ServiceState, str]:
        """Reads process liveness (cheap: no HTTP), so listing many deployments is fast.

        Returns:
            (state, message).
        """
        sup = adopt_supervision(self.status, self.workdir)
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
        adopt_supervision(self.status, self.workdir)
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


__all__ = [
    "DRAIN_TIMEOUT",
    "LocalDeploymentConfig",
    "LocalDeploymentStatus",
    "LocalProcessService",
    "is_loopback",
    "make_tree_private",
    "metrics_from_reply",
    "private_dir",
    "zmd_home",
]

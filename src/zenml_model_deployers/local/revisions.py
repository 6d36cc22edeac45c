"""The revision lifecycle of a local deployment: start a revision's server, verify it, switch
the front to it, retire the old one; start and stop a deployment; end what an interrupted
deploy left behind.

``Revisions`` does this for ``LocalProcessService`` (``local/service.py``), which builds one
per call and delegates its DeploymentService hooks to it; what differs per backend comes from
the service's hooks (``server_command``, ``check_serving``, ...), listed in ``ServerHooks``.
An update starts the new server, waits until it is ready, switches the front, hands the
server to the front's supervisor, then drains and stops the old one; a failure before the
switch tears the new server down and leaves the old one serving.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from zenml_model_deployers import secrets
from zenml_model_deployers.errors import DeploymentError
from zenml_model_deployers.local import process as proc
from zenml_model_deployers.local.config import (
    LocalDeploymentConfig,
    LocalDeploymentStatus,
    health_host,
    private_dir,
    url_host,
)
from zenml_model_deployers.local.front import DRAIN_TIMEOUT, Front
from zenml_model_deployers.local.launch import (
    HANDOFF_SOCKET,
    METRICS_DIR,
    free_port,
    make_tree_private,
    port_is_free,
)
from zenml_model_deployers.local.readiness import wait_until_ready
from zenml_model_deployers.local.state import orphans
from zenml_model_deployers.local.supervision import (
    RestartPolicy,
    adopt_supervision,
    hand_over,
    resupply_secrets,
    scrub_specs,
    supervision_spec,
    wait_for_supervisor,
)

logger = logging.getLogger(__name__)


class ServerHooks(Protocol):
    """What the revision lifecycle uses of ``LocalProcessService`` (its docstrings say what
    each hook guarantees)."""

    RESTART_LIMIT: ClassVar[int]
    RESTART_BACKOFF: ClassVar[tuple[float, float]]
    RESTART_STABLE_AFTER: ClassVar[float]
    config: LocalDeploymentConfig
    status: LocalDeploymentStatus

    @property
    def deployment_name(self) -> str: ...
    @property
    def workdir(self) -> Path: ...
    @property
    def direct_data_path(self) -> bool: ...
    @property
    def relay_may_step_in(self) -> bool: ...
    @property
    def front(self) -> Front: ...
    def server_command(self, port: int) -> list[str]: ...
    def direct_server_command(self, handoff: Path) -> list[str]: ...
    def direct_server_ready(self, log: Path) -> bool: ...
    def check_serving(self, base_url: str) -> None: ...
    def failure_cause(self, log: Path) -> str: ...
    def server_env(self) -> dict[str, str]: ...
    def restart_env(self, env: dict[str, str]) -> dict[str, str]: ...
    def api_key_value(self) -> str | None: ...
    def secret_values(self) -> list[str]: ...
    def predict_path(self) -> str: ...
    def format_request(self, data: Any) -> tuple[dict[str, str], bytes]: ...
    def mark_ready(self) -> None: ...
    def restart_command(
        self, server: proc.ProcessHandle, argv: list[str], env: dict[str, str], port: int
    ) -> tuple[list[str], dict[str, str]]: ...


@dataclass
class Started:
    """A server started and found ready, not yet serving.

    Attributes:
        handle: its process.
        port: its private port (the public one on the direct data path).
        log: its log.
        spec: its supervision spec, written once it serves.
    """

    handle: proc.ProcessHandle
    port: int
    log: Path
    spec: dict[str, Any]


@dataclass
class OnService:
    """A part of the local runtime at work on one deployment; it keeps nothing itself.

    Attributes:
        svc: the deployment's service (its config, status and hooks).
    """

    svc: ServerHooks

    @property
    def status(self) -> LocalDeploymentStatus:
        """The deployment's status (updated as processes start and stop)."""
        return self.svc.status


class Revisions(OnService):
    """Starts, switches and retires the revisions of one local deployment."""

    # ----------------------------------------------------------------- one server
    def start_server(
        self,
        timeout: float,
        after_spawn: Callable[[], None] | None = None,
        direct: bool = False,
    ) -> Started:
        """Starts a server for the service's config on a private port and waits until it is
        ready (health, smoke request, the backend's own check).

        ``after_spawn`` runs while the server loads; if it raises, the server is ended. The
        front supervises the server once :func:`supervision.hand_over` wrote its spec (after
        the switch).

        ``direct``: the server accepts on the front's listening socket instead (the direct
        data path, when no other server serves: ``after_spawn`` starts the front and takes it
        out of the data path, so that the server is the only one answering the public port,
        where it is checked); the returned port is the public one.

        Args:
            timeout: seconds until ready.
            after_spawn: what to do while it loads.
            direct: serve on the front's socket.

        Returns:
            The ready server.
        """
        svc = self.svc
        config = svc.config
        port = 0 if direct else free_port()
        log = svc.workdir / f"server-{config.config_hash()}-{int(time.time())}.log"
        env = svc.server_env()
        if direct:
            argv = svc.direct_server_command(svc.workdir / HANDOFF_SOCKET)
        else:
            argv = svc.server_command(port)
        handle = proc.spawn(argv, log, env=env, cwd=svc.workdir)
        base = f"http://127.0.0.1:{port}"
        smoke = None
        if config.smoke_input is not None:

            def smoke() -> None:
                import requests

                headers, body = svc.format_request(config.smoke_input)
                r = requests.post(base + svc.predict_path(), data=body, headers=headers, timeout=30)
                if r.status_code >= 400:
                    raise RuntimeError(f"HTTP {r.status_code}: {secrets.redact(r.text[:2000])}")

        try:
            if after_spawn is not None:
                after_spawn()
            if direct:
                assert self.status.public_port is not None
                port = self.status.public_port
                base = f"http://{url_host(health_host(config.host))}:{port}"
            wait_until_ready(
                deployment_name=svc.deployment_name,
                process=handle,
                log_path=log,
                health_url=base + config.health_path,
                health_method=config.health_method,
                timeout=timeout,
                smoke=smoke,
                keep_log=proc.keep_failed_log,
                cause_of=svc.failure_cause,
            )
            svc.check_serving(base)
        except BaseException:
            handle.terminate(5)
            raise
        restart = svc.restart_command(handle, argv, env, port)
        spec = self._spec(handle, restart, env, port, log, timeout)
        if direct:
            spec["health_host"] = health_host(config.host)
        return Started(handle, port, log, spec)

    def _spec(
        self,
        handle: proc.ProcessHandle,
        restart: tuple[list[str], dict[str, str]],
        env: dict[str, str],
        port: int,
        log: Path,
        timeout: float,
    ) -> dict[str, Any]:
        """The supervision spec of a ready server; ``restart``: the command and environment
        that restart it (``restart_command``), ``env`` the one it was started with."""
        svc = self.svc
        return supervision_spec(
            deployment_name=svc.deployment_name,
            config=svc.config,
            workdir=svc.workdir,
            server=handle,
            argv=restart[0],
            env=svc.restart_env(restart[1]),
            started_env=env,
            port=port,
            log=log,
            ready_timeout=timeout,
            policy=RestartPolicy(svc.RESTART_LIMIT, svc.RESTART_BACKOFF, svc.RESTART_STABLE_AFTER),
            api_key=svc.api_key_value(),
            extra_secrets=svc.secret_values(),
        )

    def _serve(self, started: Started, direct: bool) -> None:
        """Records a server that serves now as the deployment's."""
        self.status.server = started.handle
        self.status.server_port = None if direct else started.port
        self.status.log_path = str(started.log)
        self.status.direct = direct

    # ----------------------------------------------------------------- the direct data path
    def handoff(self, timeout: float) -> None:
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
        svc, status = self.svc, self.status
        private, private_port = status.server, status.server_port
        if status.direct or private is None or status.public_port is None:
            return
        log = svc.workdir / f"server-{svc.config.config_hash()}-{int(time.time())}-direct.log"
        env = svc.server_env()
        argv = svc.direct_server_command(svc.workdir / HANDOFF_SOCKET)
        handle = proc.spawn(argv, log, env=env, cwd=svc.workdir)
        deadline = time.monotonic() + timeout
        while not svc.direct_server_ready(log):
            proc.reap_children()
            if not handle.is_alive() or time.monotonic() > deadline:
                handle.terminate(5)
                logger.warning(
                    "The direct data path of '%s' did not start (%s); the relay stays in the "
                    "data path.",
                    svc.deployment_name,
                    svc.failure_cause(log) or "no server within the timeout",
                )
                return
            time.sleep(0.05)
        spec = self._spec(handle, (argv, env), env, status.public_port, log, timeout)
        spec["health_host"] = health_host(svc.config.host)
        front = svc.front
        hand_over(svc.workdir, spec, status, front.call)  # before the private server goes
        self._serve(Started(handle, status.public_port, log, spec), direct=True)
        try:
            reply = front.call(
                {"cmd": "accept", "on": False, "timeout": DRAIN_TIMEOUT},
                timeout=DRAIN_TIMEOUT + 10,
            )
            if reply.get("left"):
                logger.info("Closed %s idle connection(s) of the relay.", reply["left"])
        except (DeploymentError, OSError, ValueError) as e:
            logger.warning("The relay did not step out of the data path cleanly (%s).", e)
        front.drain_quietly(private_port)
        private.terminate(DRAIN_TIMEOUT)

    def step_in(self, timeout: float) -> None:
        """Puts the relay into the data path of a deployment that serves on the direct data
        path (before a canary: only the relay can split and measure requests per revision).

        A server of the serving revision starts on a private port and is checked as on an
        update; the relay accepts again and sends every new connection to it; the direct
        server is retired gracefully (it stops accepting, finishes what it answers and closes
        each kept-alive connection at its next request boundary, ``flavors/mlflow/drain.py``).
        The same revision serves throughout, so no request can be split between two. If the
        private server does not become ready, it is ended and the direct server keeps serving.
        :meth:`handoff` steps the relay out again.

        Args:
            timeout: seconds for the private server to become ready.
        """
        svc, status = self.svc, self.status
        direct_server = status.server
        if not status.direct or direct_server is None:
            return
        started = self.start_server(timeout)
        self._route_to(started)  # handed over before the direct server goes
        direct_server.terminate(DRAIN_TIMEOUT)
        self._serve(started, direct=False)
        svc.front.fold_metrics()
        make_tree_private(svc.workdir)

    def _route_to(self, started: Started) -> None:
        """Sends every new request to a ready server through the relay (which accepts again
        where a direct server serves now, before that server is retired), then hands the
        server to the front's supervisor; a failed switch ends the server."""
        front = self.svc.front
        try:
            front.switch(started.port)
            front.step_in()
        except BaseException:
            started.handle.terminate(5)
            raise
        hand_over(self.svc.workdir, started.spec, self.status, front.call)

    # ----------------------------------------------------------------- lifecycle
    def provision(self, timeout: float) -> None:
        """Serves the service's config as the deployment's new revision (see
        DeploymentService.provision_revision): the old revision serves until the new one is
        ready, and keeps serving if it fails.

        Args:
            timeout: seconds.
        """
        svc, status = self.svc, self.status
        private_dir(svc.workdir)
        adopt_supervision(status, svc.workdir)
        self.end_orphans()
        old_server, old_port = status.server, status.server_port
        old_alive = old_server is not None and old_server.is_alive()
        front = svc.front
        # A new revision that pins another address needs a new front; the old front keeps
        # serving the old address until the new revision is ready.
        old_front = front.detach_if_moved()
        had_relay = front.alive()
        if not had_relay:
            # A taken port fails before a server spends seconds loading the model.
            try:
                front.check_port()
            except BaseException:
                front.restore(old_front)
                raise
        if svc.direct_data_path and not old_alive:
            # Nothing serves: the new revision's server takes the socket at once (it is
            # checked on the public port, where the front stops accepting meanwhile).
            try:
                started = self.start_server(
                    timeout, after_spawn=lambda: front.ensure_out(None), direct=True
                )
            except BaseException:
                if not had_relay or old_front is not None:
                    front.stop()
                elif front.alive():
                    with contextlib.suppress(DeploymentError, OSError, ValueError):
                        front.call({"cmd": "accept", "on": True})
                front.restore(old_front)
                raise
            hand_over(svc.workdir, started.spec, status, front.call)
            if old_front is not None and old_front[0] is not None:
                old_front[0].terminate(5)
            self._serve(started, direct=True)
            self._done(revision=True)
            return
        try:
            try:
                # The front starts while the new server loads (it costs a Python start, ~0.1 s);
                # a busy pinned port still fails at once, ending the server just started.
                started = self.start_server(
                    timeout,
                    after_spawn=lambda: front.ensure(target=old_port if old_alive else None),
                )
            except BaseException:
                if not had_relay and (old_front is not None or not old_alive):
                    front.stop()
                raise
            self._route_to(started)
        except BaseException:
            front.restore(old_front)
            raise
        # From here on the new revision serves: retiring the old one cannot fail the deploy.
        if old_alive and old_server is not None and old_port != started.port:
            if old_front is None and old_port is not None:
                try:
                    front.drain(old_port)
                except (DeploymentError, OSError, ValueError) as e:
                    logger.warning("Draining the old revision failed (%s); stopping it now.", e)
            old_server.terminate(DRAIN_TIMEOUT)
        if old_front is not None and old_front[0] is not None:
            old_front[0].terminate(5)
        self._serve(started, direct=False)
        status.revision += 1
        if svc.direct_data_path:
            self.handoff(timeout)
        self._done()

    def _done(self, revision: bool = False) -> None:
        """What every successful start or update ends with."""
        if revision:
            self.status.revision += 1
        self.svc.front.fold_metrics()
        make_tree_private(self.svc.workdir)
        self.svc.mark_ready()

    def start(self, timeout: float) -> None:
        """Serves the recorded revision again (see DeploymentService.start_backend): what
        still runs is kept, what is gone starts anew on the same URL.

        Args:
            timeout: seconds.
        """
        svc, status = self.svc, self.status
        front = svc.front
        sup = adopt_supervision(status, svc.workdir)
        if sup is not None and sup.get("state") == "restarting":
            wait_for_supervisor(status, svc.workdir, front.alive, timeout)
        server_ok = status.server is not None and status.server.is_alive()
        if front.alive():
            scrub_specs(svc.workdir, front.call)  # written by an older version
        if server_ok and front.alive():
            svc.mark_ready()
            return
        ended = False
        if server_ok and status.direct and status.server is not None:
            # A direct server without its front (the front died): it holds the port; both
            # start afresh.
            status.server.terminate(DRAIN_TIMEOUT)
            server_ok, ended = False, True
        ended = self.end_orphans() or ended
        if not server_ok:
            status.server = None
            # No server counts now: a live front keeps what they counted, a new one starts at 0.
            if front.alive():
                front.fold_metrics(keep="")
            else:
                shutil.rmtree(svc.workdir / METRICS_DIR, ignore_errors=True)
        direct = not server_ok and svc.direct_data_path
        if ended and not front.alive():
            self._wait_port_released()
        if direct:
            front.ensure_out(None)
        else:
            had_front = front.alive()
            front.ensure(target=status.server_port if server_ok else None)
            if server_ok and not had_front:
                # A new front adopts the running server: it needs the server's secrets.
                self.resupply_secrets()
        if not server_ok:
            try:
                started = self.start_server(timeout, direct=direct)
            except BaseException:
                front.stop()
                raise
            if not direct:
                front.switch(started.port)
            hand_over(svc.workdir, started.spec, status, front.call)
            self._serve(started, direct)
        make_tree_private(svc.workdir)
        svc.mark_ready()

    def _wait_port_released(self) -> None:
        """Waits (at most DRAIN_TIMEOUT seconds) until the recorded public port can be bound,
        after this start ended a direct server or an orphan: it may still hold the listening
        socket for a moment (seen twice on a loaded machine, not reproduced alone); the front's
        own check then names a port that stays taken."""
        port = self.svc.config.port or self.status.public_port
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while port and not port_is_free(self.svc.config.host, port):
            if time.monotonic() > deadline:
                return
            time.sleep(0.1)

    def resupply_secrets(self) -> None:
        """Hands a front that started again the secrets of the servers it supervises, resolved
        again through ZenML (they are kept only in a front's memory)."""
        svc = self.svc
        extra = svc.secret_values()
        if (
            not svc.config.api_key
            and not extra
            and not any(secrets.is_secret_reference(v) for v in svc.config.env.values())
        ):
            return
        env = svc.server_env()
        redact = [env[k] for k, v in svc.config.env.items() if secrets.is_secret_reference(v)]
        key = svc.api_key_value()
        resupply_secrets(
            svc.workdir,
            svc.config.config_hash(),
            svc.restart_env(env),
            [*redact, *([key] if key else []), *extra],
            svc.front.call,
        )

    def stop(self, timeout: float) -> None:
        """Stops the front and the server (see DeploymentService.stop_backend).

        Args:
            timeout: seconds.
        """
        svc, status = self.svc, self.status
        # The front first: its supervisor would take the server's exit for a crash.
        svc.front.stop()
        adopt_supervision(status, svc.workdir)
        if status.server is not None:
            status.server.terminate(min(timeout, DRAIN_TIMEOUT))
        status.server = None
        status.direct = False
        # The front's counters ended with it; the servers' files go too (a start counts anew).
        shutil.rmtree(svc.workdir / METRICS_DIR, ignore_errors=True)

    def end_orphans(self) -> bool:
        """Ends processes of this deployment that no record knows (a deploy killed midway);
        True if it ended any.

        They are ours: started in this deployment's directory (servers run there, the relay
        names its ready file there). Recorded processes are left alone; callers hold the lock.
        """
        status = self.status
        known = [status.server, status.relay, status.canary_server]
        found = orphans(
            self.svc.workdir,
            [h.model_dump() if h is not None else None for h in known],
            proc.python_executable(),
        )
        if found:
            logger.warning(
                "Ending %d unrecorded process(es) of '%s' left by an interrupted deploy.",
                len(found),
                self.svc.deployment_name,
            )
            proc.terminate_all(found, 5)
        return bool(found)

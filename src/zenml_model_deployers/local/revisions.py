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
import sys
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
    private_dir,
)
from zenml_model_deployers.local.front import DRAIN_TIMEOUT, Front
from zenml_model_deployers.local.launch import (
    METRICS_DIR,
    free_port,
    handoff_socket,
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
    def gated_server_command(self, port: int, handoff: Path, gate: Path) -> list[str]: ...
    def gate_events(self, log: Path, since: int = 0) -> tuple[int, int]: ...
    def wake_gate(self, pid: int) -> None: ...
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
    def candidate_environment(self) -> contextlib.AbstractContextManager[None]: ...
    def adopt_candidate(self) -> None: ...
    def forget_candidate(self) -> None: ...


GATE_SUFFIX = ".gate"
# Starts of a server whose private port another process took first (see start_server).
PORT_RACE_RETRIES = 2


class _PortTaken(Exception):
    """A server's private port was taken before it bound it (it exited: start another)."""


def _port_taken(log: Path, port: int) -> bool:
    """Whether a server that exited says its bind of ``port`` failed (uvicorn's words)."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return False
    return "address already in use" in text.lower() and str(port) in text


def gate_of(log: Path) -> Path:
    """The gate file of the server that logs to ``log`` (``local/gate.py``)."""
    return log.with_suffix(GATE_SUFFIX)


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
    ) -> Started:
        """Starts a server for the service's config on a private port and waits until it is
        ready (health, smoke request, the backend's own check).

        ``after_spawn`` runs while the server loads; if it raises, the server is ended. The
        front supervises the server once :func:`supervision.hand_over` wrote its spec (after
        the switch).

        Where the config takes the direct data path (``direct_data_path``) the server gets a
        gate as well (``local/gate.py``): it is checked on its private port like any
        other, and :meth:`handoff` has it accept on the front's public socket too, with no
        second start.

        The private port is one the OS called free a moment before; on a busy machine another
        process may take it first (an outgoing connection's ephemeral port): a server whose
        bind failed so is started again on another port (:data:`PORT_RACE_RETRIES` times).

        Args:
            timeout: seconds until ready.
            after_spawn: what to do while it loads.

        Returns:
            The ready server.
        """
        for attempt in range(PORT_RACE_RETRIES + 1):
            try:
                return self._start_server_once(
                    timeout, after_spawn if attempt == 0 else None, attempt == PORT_RACE_RETRIES
                )
            except _PortTaken as taken:
                logger.info("%s; starting the server on another port.", taken)
        raise AssertionError("unreachable")  # the last attempt raises the error itself

    def _start_server_once(
        self, timeout: float, after_spawn: Callable[[], None] | None, last: bool = False
    ) -> Started:
        """One try of :meth:`start_server`; raises _PortTaken when the private port was taken
        before the server bound it (not on the last try: then the error is the server's)."""
        svc = self.svc
        config = svc.config
        port = free_port()
        log = svc.workdir / f"server-{config.config_hash()}-{int(time.time())}-{port}.log"
        env = svc.server_env()
        if svc.direct_data_path:
            gate = gate_of(log)
            gate.unlink(missing_ok=True)
            argv = svc.gated_server_command(port, handoff_socket(svc.workdir), gate)
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

        def keep_log(path: Path) -> Path:
            if not last and _port_taken(path, port):
                raise _PortTaken(f"Port {port} was taken before the server bound it")
            return proc.keep_failed_log(path)

        try:
            if after_spawn is not None:
                after_spawn()
            wait_until_ready(
                deployment_name=svc.deployment_name,
                process=handle,
                log_path=log,
                health_url=base + config.health_path,
                health_method=config.health_method,
                timeout=timeout,
                smoke=smoke,
                keep_log=keep_log,
                cause_of=svc.failure_cause,
            )
            svc.check_serving(base)
        except BaseException:
            handle.terminate(5)
            if sys.exc_info()[0] is _PortTaken:
                log.unlink(missing_ok=True)
                gate_of(log).unlink(missing_ok=True)
            raise
        restart = svc.restart_command(handle, argv, env, port)
        spec = self._spec(handle, restart, env, port, log, timeout)
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

    def _serve(self, started: Started) -> None:
        """Records a server that serves now (through the relay) as the deployment's."""
        self.status.server = started.handle
        self.status.server_port = started.port
        self.status.log_path = str(started.log)
        self.status.direct = False

    # ----------------------------------------------------------------- the direct data path
    def serving_gate(self) -> Path | None:
        """The gate of the serving server (None: it has none, e.g. a relay-only config, or
        a direct server of an older version that took the socket at its start)."""
        status = self.status
        if not self.svc.direct_data_path or status.server_port is None or not status.log_path:
            return None
        return gate_of(Path(status.log_path))

    def _set_gate(self, gate: Path, opened: bool, timeout: float) -> bool:
        """Opens (creates) or closes (removes) the serving server's gate, wakes its workers,
        and waits until each of them logged that it did; False if they did not in
        ``timeout`` s."""
        svc, server = self.svc, self.status.server
        log = Path(str(self.status.log_path))
        which = 0 if opened else 1
        try:
            since = log.stat().st_size  # only what the workers log from now on counts
        except OSError:
            since = 0
        if opened:
            gate.touch(mode=0o600)
        else:
            gate.unlink(missing_ok=True)
        if server is not None:
            svc.wake_gate(server.pid)
        workers = max(1, int(getattr(svc.config, "workers", 1) or 1))
        deadline = time.monotonic() + timeout
        while svc.gate_events(log, since)[which] < workers:
            proc.reap_children()
            if server is None or not server.is_alive() or time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def handoff(self, timeout: float) -> None:
        """Takes the relay out of the data path (the direct data path): the serving server,
        verified on its private port, opens its gate and accepts on the front's listening
        socket itself (``local/gate.py``, no second start), then the relay stops
        accepting (its kept-alive connections end after their next answer).

        If the gate does not open in time, it is closed again and the relay stays in the
        path (a warning; the deployment serves either way).

        Args:
            timeout: seconds for the server's workers to accept on the socket.
        """
        svc, status = self.svc, self.status
        gate = self.serving_gate()
        if status.direct or gate is None or status.public_port is None:
            return
        front = svc.front
        if not self._set_gate(gate, True, min(timeout, DRAIN_TIMEOUT)):
            gate.unlink(missing_ok=True)
            logger.warning(
                "The direct data path of '%s' did not open (%s); the relay stays in the data path.",
                svc.deployment_name,
                svc.failure_cause(Path(str(status.log_path))) or "no worker took the socket",
            )
            with contextlib.suppress(DeploymentError, OSError, ValueError):
                front.call({"cmd": "accept", "on": True})
            return
        status.direct = True
        try:
            reply = front.call(
                {"cmd": "accept", "on": False, "timeout": DRAIN_TIMEOUT},
                timeout=DRAIN_TIMEOUT + 10,
            )
            if reply.get("left"):
                logger.info("Closed %s idle connection(s) of the relay.", reply["left"])
        except (DeploymentError, OSError, ValueError) as e:
            logger.warning("The relay did not step out of the data path cleanly (%s).", e)

    def step_in(self, timeout: float) -> None:
        """Puts the relay into the data path of a deployment that serves on the direct data
        path (before a canary: only the relay can split and measure requests per revision).

        The relay accepts again and forwards to the serving server's private port; the
        server then closes its gate (it stops accepting on the public socket and answers
        the connections it has). The same server serves throughout: nothing starts, and no
        request can be split between two. :meth:`handoff` steps the relay out again.

        Args:
            timeout: seconds for the server's workers to stop accepting on the socket.
        """
        svc, status = self.svc, self.status
        gate = self.serving_gate()
        if not status.direct or status.server is None or gate is None:
            return
        assert status.server_port is not None
        front = svc.front
        front.switch(status.server_port)
        front.step_in()
        status.direct = False
        if not self._set_gate(gate, False, min(timeout, DRAIN_TIMEOUT)):
            logger.warning(
                "The server of '%s' did not confirm it stopped accepting on the public "
                "socket; the relay accepts there too.",
                svc.deployment_name,
            )
        front.fold_metrics()
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
            # Nothing serves: the front starts out of the data path (clients wait in the
            # socket's backlog) while the new server loads and is checked on its private
            # port; then its gate opens.
            try:
                started = self.start_server(timeout, after_spawn=lambda: front.ensure_out(None))
                front.switch(started.port)
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
            self._serve(started)
            self.handoff(timeout)
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
            old_gate = self.serving_gate() if status.direct else None
            self._route_to(started)
            if old_gate is not None:
                # The old direct server stops accepting at once and ends each of its kept-alive
                # connections after its next answer: clients reach the relay (the new revision)
                # without waiting for that server's retirement below.
                old_gate.unlink(missing_ok=True)
                if old_alive and old_server is not None:
                    svc.wake_gate(old_server.pid)
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
        self._serve(started)
        status.revision += 1
        if svc.direct_data_path:
            self.handoff(timeout)
        self._done()

    def changed_in_place(self, timeout: float) -> None:
        """Records that the serving server now serves the service's config, which the backend
        applied to it without a restart (e.g. vLLM's LoRA adapters): a restart after a crash
        runs the new config's command, the relay counts requests under the new revision, and
        the revision is recorded as a new one.

        Args:
            timeout: seconds a restarted server gets to become ready.
        """
        svc, status = self.svc, self.status
        assert status.server is not None and status.server_port is not None
        port, env = status.server_port, svc.server_env()
        restart = svc.restart_command(status.server, svc.server_command(port), env, port)
        log = Path(status.log_path) if status.log_path else svc.workdir / "server.log"
        spec = self._spec(status.server, restart, env, port, log, timeout)
        front = svc.front
        hand_over(svc.workdir, spec, status, front.call)
        front.switch(port)
        self._done(revision=True)

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
            front.ensure_out(None)  # clients wait in the backlog until the gate opens
        else:
            had_front = front.alive()
            front.ensure(target=status.server_port if server_ok else None)
            if server_ok and not had_front:
                # A new front adopts the running server: it needs the server's secrets.
                self.resupply_secrets()
        if not server_ok:
            try:
                started = self.start_server(timeout)
                front.switch(started.port)
            except BaseException:
                front.stop()
                raise
            hand_over(svc.workdir, started.spec, status, front.call)
            self._serve(started)
            if direct:
                self.handoff(timeout)
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
        for gate in svc.workdir.glob(f"server-*{GATE_SUFFIX}"):  # a start opens a new one
            gate.unlink(missing_ok=True)
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

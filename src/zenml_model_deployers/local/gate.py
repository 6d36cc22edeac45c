"""A verified server takes the deployment's public socket without starting again: the gate.

Runs inside the server process (``metering.worker_app`` installs it in every uvicorn worker),
never in the deploying one, but for :func:`wake`, which the deployer calls. Only the standard
library is imported at module level.

A server of a flavor with a direct data path (`zmd-mlflow`, `zmd-bentoml`) that may serve on
it (``data_path="auto"``, the default, or ``"direct"``) is started with a private loopback port,
where it is checked as every server is (health, smoke request), and a gate: a file path in the
deployment's private folder (the flavor's ``serve.py --accept-gate``). While the file does not
exist the server answers on its private port only (the relay forwards to it). Once the
deployer creates the file, each worker receives the deployment's public listening socket from
the front (its Unix handoff socket, SCM_RIGHTS, as ``serve.py --listen-fd-from`` does) and accepts on it too, with uvicorn's own protocol
(the protocol factory uvicorn makes for its private port); the worker logs
:data:`OPENED` once it accepts there. When the file is removed again, each worker stops
accepting on the public socket (the relay accepts there then) and logs :data:`CLOSED`; the
connections it has keep being answered. uvicorn's graceful shutdown (SIGTERM) stops accepting on
both sockets. The public socket is one socket shared by every process that accepts on it (the
front's, the old server's and the new one's copies): a connection is accepted by one process and
stays with it, so no request is split between two servers.

So an update of a deployment on the direct data path starts its new server once: it is checked
on its private port, then its gate opens and the old server retires (``drain.py``); the relay
stepping in (a canary) and out (after it) moves no server at all: the gate closes or opens.

A restarted server (the front's self-heal) opens its gate as soon as it serves when the file
exists: the revision was verified when it was deployed.

Whoever creates or removes the file then wakes the server's workers (:func:`wake`: the signal
:data:`WAKE_SIGNAL` to each of its processes that catches it), so a worker looks at the file at
once instead of at its next look (every :data:`POLL` seconds, which stays as the fallback: a
worker not started yet, a system without ``/proc``). The file stays the one truth; a wake only
says "look now".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from typing import Any

GATE_ENV = "ZMD_ACCEPT_GATE"
HANDOFF_ENV = "ZMD_ACCEPT_HANDOFF"
PRIVATE_PORT_ENV = "ZMD_PRIVATE_PORT"
OPENED = "zmd: accepting on the public socket"
CLOSED = "zmd: stopped accepting on the public socket"
# Seconds between two looks at the gate file (what an open or close waits at most for a worker
# that was not woken).
POLL = 0.05
# Makes a worker look at its gate file now (uvicorn's workers leave it alone: its parent queues
# and ignores it; a worker catches it only once its gate watches, see _catch_wake).
WAKE_SIGNAL = signal.SIGUSR1
logger = logging.getLogger("uvicorn.error")
_state = {"closed": False}


def closed() -> bool:
    """Whether this worker's gate closed after it was open: the connections it still has on
    the public socket end after their next answer (``Connection: close``), so each client's
    next request reaches whoever accepts there now (the relay)."""
    return _state["closed"]


def private_port() -> int | None:
    """The private port of a server with a gate (None: no gate). It counts only the requests
    that do not arrive there: the relay counts what it forwards to the private port."""
    if not os.environ.get(GATE_ENV):
        return None
    return int(os.environ.get(PRIVATE_PORT_ENV) or 0)


def _receive(path: str, timeout: float = 10.0) -> socket.socket:
    """The front's listening socket over its handoff socket (see ``serve.inherit_listener``)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
        c.settimeout(timeout)
        c.connect(path)
        _, fds, _, _ = socket.recv_fds(c, 16, 1)
    if not fds:
        raise RuntimeError(f"the deployment's front at {path} handed over no listening socket")
    sock = socket.socket(fileno=fds[0])
    sock.setblocking(False)
    return sock


def _protocol_factory(server: Any) -> Any:
    """uvicorn's protocol factory, as ``Server.startup`` makes it for its own sockets (the
    same HTTP protocol class, server state and lifespan state: one server, two sockets)."""
    config = server.config

    def create_protocol(_loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Protocol:
        return config.http_protocol_class(  # type: ignore[no-any-return]
            config=config,
            server_state=server.server_state,
            app_state=server.lifespan.state,
            _loop=_loop,
        )

    return create_protocol


async def _watch(server: Any, gate: str, handoff: str) -> None:
    """Opens and closes this worker's accepting on the public socket as the gate file comes
    and goes, until uvicorn shuts the worker down."""
    loop = asyncio.get_running_loop()
    public: asyncio.base_events.Server | None = None
    woken = asyncio.Event()
    _catch_wake(loop, woken)
    while not server.should_exit:
        woken.clear()  # before the look: a wake during it makes the next look come at once
        want = os.path.exists(gate)
        if want and public is None:
            sock = None
            try:
                sock = await loop.run_in_executor(None, _receive, handoff)
                public = await loop.create_server(
                    _protocol_factory(server), sock=sock, backlog=server.config.backlog
                )
            except (OSError, RuntimeError, AttributeError) as e:
                if sock is not None:
                    sock.close()
                logger.warning("zmd: the public socket could not be taken (%s); retrying", e)
                await asyncio.sleep(0.5)
                continue
            server.servers.append(public)  # uvicorn's shutdown stops accepting there too
            _state["closed"] = False
            logger.info("%s (pid %d)", OPENED, os.getpid())
        elif not want and public is not None:
            public.close()  # this worker's copy only: the socket keeps listening
            if public in server.servers:
                server.servers.remove(public)
            public, _state["closed"] = None, True
            logger.info("%s (pid %d)", CLOSED, os.getpid())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(woken.wait(), POLL)


def _catch_wake(loop: asyncio.AbstractEventLoop, woken: asyncio.Event) -> None:
    """Sets ``woken`` when :data:`WAKE_SIGNAL` arrives (a handler of this process's main
    thread, where uvicorn runs a worker's loop; elsewhere the worker only polls)."""

    def on_wake(_signum: int, _frame: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: the worker is ending
            loop.call_soon_threadsafe(woken.set)

    with contextlib.suppress(ValueError):  # not the main thread
        signal.signal(WAKE_SIGNAL, on_wake)


def _catches(pid: int, signum: int) -> bool:
    """Whether the process has a handler for ``signum`` (Linux ``/proc``; False elsewhere)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    except (OSError, ValueError, IndexError):
        pass
    return False


def wake(pid: int) -> int:
    """Makes the workers of the server ``pid`` look at their gate file now (after the deployer
    created or removed it): :data:`WAKE_SIGNAL` to the server's processes that catch it.

    Runs in the deploying process. A process that does not catch the signal (a worker whose
    gate does not watch yet, a server of an older version, another program) never gets it:
    the signal's default would end it. Such a worker sees the file at its next look.

    Args:
        pid: the server's process (its uvicorn workers are its descendants).

    Returns:
        How many processes were signalled.
    """
    import psutil

    try:
        top = psutil.Process(pid)
        pids = [pid, *(p.pid for p in top.children(recursive=True))]
    except psutil.Error:
        return 0
    sent = 0
    for p in pids:
        if _catches(p, WAKE_SIGNAL):
            with contextlib.suppress(OSError):
                os.kill(p, WAKE_SIGNAL)
                sent += 1
    return sent


def install() -> None:
    """Makes uvicorn's server of this worker watch the gate once it serves its private port
    (idempotent; nothing without a gate in the environment)."""
    gate, handoff = os.environ.get(GATE_ENV), os.environ.get(HANDOFF_ENV)
    if not gate or not handoff:
        return
    from uvicorn.server import Server

    original = Server.startup
    if getattr(original, "_zmd_gate", False):
        return

    async def startup(self: Any, sockets: Any = None) -> None:
        await original(self, sockets=sockets)
        if getattr(self, "started", False):
            self._zmd_gate_task = asyncio.get_running_loop().create_task(
                _watch(self, gate, handoff)
            )

    startup._zmd_gate = True  # type: ignore[attr-defined]
    Server.startup = startup  # type: ignore[method-assign]

"""A direct-data-path server retires without losing a request sent on a kept-alive connection.

Runs inside the server process (``metering.worker_app`` installs it), never in the deploying one.

On the direct data path (``data_path="direct"``) clients hold their connections with the
server's uvicorn workers themselves. uvicorn's graceful shutdown (the SIGTERM that retires a
revision) stops accepting, lets the requests in flight finish with ``Connection: close``, and
closes every idle kept-alive connection at once. A client that sends its next request on such a
connection while it is closed gets no answer (``RemoteDisconnected``): HTTP/1.1 lets a server
close an idle connection at any time, and a client retries only idempotent requests by itself,
so a ``POST /invocations`` is lost. CI saw one under a looping client during an update.

The front steps out of the data path the way HTTP/1.1 intends (its idle connections get
``Connection: close`` on their next request); with :func:`install`, a retiring uvicorn worker
does the same:

- it stops accepting at once (uvicorn's own first step; the socket stays open for the front,
  which accepts on it again before any server is retired);
- an idle connection is not closed at shutdown: its next request is answered with
  ``Connection: close`` (:func:`close_after`, added by the metering middleware, ``metering.py``),
  and the connection then ends;
- one still idle after :data:`IDLE_GRACE` seconds is closed then, with uvicorn's own shutdown of
  that connection, as its keep-alive timeout closes any idle connection in normal serving.

uvicorn waits for its connections to end before the worker exits, so a retirement takes at most
:data:`IDLE_GRACE` seconds longer, and only when a connection stays idle throughout.
``metering.worker_app`` calls :func:`install` in each worker as it builds the app the worker
serves (the only code of ours a spawned worker runs before serving). Only the standard library is imported here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, MutableMapping
from typing import Any

# Seconds an idle connection of a retiring worker is kept for its next request.
IDLE_GRACE = 1.0
# uvicorn's HTTP/1.1 protocol classes ("auto" picks httptools when it is installed).
_PROTOCOLS = (
    ("uvicorn.protocols.http.httptools_impl", "HttpToolsProtocol"),
    ("uvicorn.protocols.http.h11_impl", "H11Protocol"),
)
_state = {"retiring": False}


def close_after(message: MutableMapping[str, Any], also: bool = False) -> None:
    """Adds ``Connection: close`` to an ASGI ``http.response.start`` message while the worker
    retires (uvicorn then ends the connection after this answer, and the client knows it).

    Args:
        message: the message (changed in place).
        also: close after this answer even while the worker does not retire (a connection
            of the public socket after the worker's gate closed, ``gate.py``).
    """
    if not (_state["retiring"] or also):
        return
    headers = list(message.get("headers") or [])
    for name, value in headers:
        if bytes(name).lower() == b"connection" and b"close" in bytes(value).lower():
            return
    headers.append((b"connection", b"close"))
    message["headers"] = headers


def _idle(protocol: Any) -> bool:
    cycle = protocol.cycle
    return bool(cycle is None or cycle.response_complete)


def _draining_shutdown(original: Callable[[Any], None]) -> Callable[[Any], None]:
    def shutdown(self: Any) -> None:
        _state["retiring"] = True
        try:
            idle, loop = _idle(self), self.loop
        except AttributeError:  # another uvicorn's protocol: its own shutdown (test_drain.py)
            original(self)
            return
        if not idle:
            original(self)  # uvicorn's: the answer in flight gets Connection: close
            return

        def close_if_still_idle() -> None:
            if _idle(self) and not self.transport.is_closing():
                try:
                    original(self)
                except Exception:  # e.g. h11 refusing to close mid-way through a request head
                    self.transport.close()

        loop.call_later(IDLE_GRACE, close_if_still_idle)

    shutdown.__doc__ = original.__doc__
    shutdown._zmd_draining = True  # type: ignore[attr-defined]
    return shutdown


def install() -> None:
    """Makes uvicorn's HTTP/1.1 protocols (those importable here) shut down as the module says
    (idempotent)."""
    for module, name in _PROTOCOLS:
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):  # not installed: uvicorn cannot pick it either
            continue
        if callable(getattr(cls, "shutdown", None)) and not getattr(
            cls.shutdown, "_zmd_draining", False
        ):
            cls.shutdown = _draining_shutdown(cls.shutdown)

"""Per-revision request metrics counted inside a direct-data-path server, and what each of its
uvicorn workers installs (the gate, the draining retirement).

Runs inside the server process (``flavors/mlflow/metered.py``, ``flavors/bentoml/worker.py``),
never in the deploying one.

On the direct data path requests bypass the front, so the server counts them itself: a small
ASGI middleware (:class:`Metered`) around the server's app records each request, 5xx answers,
requests the client abandoned before any answer, and the time to the response's start, with
``prometheus_client`` in its multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``: one folder per
revision in the deployment's folder, one file per uvicorn worker). The series have the relay's
names, labels and buckets (``local/relay_metrics.py``); the front reads the folder beside its own
counters, so its metrics port, ``read_revision_metrics`` and ``zmd models describe/list --stats``
show the same series whichever path a request took. A server with a gate (``gate.py``) leaves
what the relay forwards to its private port to the relay's counters.

:func:`worker_app` is what a flavor's worker serves: it makes the worker retire without losing a
kept-alive connection's next request (``drain.py``: while it retires, every answer carries
``Connection: close``), take the public socket at its gate (``gate.py``), and count (the labels
come from the environment the flavor's wrapper set).
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from zenml_model_deployers.local import drain, gate
from zenml_model_deployers.local.relay_metrics import BOUNDS

DEPLOYMENT_ENV = "ZMD_METRICS_DEPLOYMENT"
REVISION_ENV = "ZMD_METRICS_REVISION"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Metered:
    """ASGI middleware: counts every HTTP request of the wrapped app (see the module)."""

    def __init__(self, app: ASGIApp, deployment: str, revision: str) -> None:
        """Creates the revision's series (in the multiprocess folder when one is set).

        Args:
            app: the ASGI app.
            deployment: the deployment's name (label).
            revision: the revision's config hash (label).
        """
        from prometheus_client import CollectorRegistry, Counter, Histogram

        registry = CollectorRegistry(auto_describe=False)  # never the process-wide default
        lv = (deployment, revision)
        self.app = app
        # A server with a gate (gate.py) leaves what the relay forwards to its private port
        # to the relay's counters.
        self.private_port = gate.private_port()
        self.requests = Counter(
            "zmd_relay_requests",
            "Requests answered.",
            ["deployment", "revision"],
            registry=registry,
        ).labels(*lv)
        errors = Counter(
            "zmd_relay_errors",
            "Failed requests.",
            ["deployment", "revision", "kind"],
            registry=registry,
        )
        self.e5xx = errors.labels(*lv, "5xx")
        self.abandoned = errors.labels(*lv, "abandoned")
        self.latency = Histogram(
            "zmd_relay_request_duration_seconds",
            "Time to the response's start.",
            ["deployment", "revision"],
            buckets=BOUNDS,
            registry=registry,
        ).labels(*lv)

    def _answered(self, status: int, started: float) -> None:
        self.latency.observe(time.perf_counter() - started)
        self.requests.inc()
        if status >= 500:
            self.e5xx.inc()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serves one ASGI connection scope, counting an HTTP request.

        Args:
            scope: ASGI scope.
            receive: ASGI receive.
            send: ASGI send.
        """
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if (
            self.private_port is not None
            and (scope.get("server") or (None, None))[1] == self.private_port
        ):
            await self.app(scope, receive, _closing(send))  # counted by the relay
            return
        t0 = time.perf_counter()
        answered = disconnected = False

        async def watching_receive() -> Message:
            nonlocal disconnected
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected = True
            return message

        async def counting_send(message: Message) -> None:
            nonlocal answered
            if not answered and message["type"] == "http.response.start":
                answered = True
                self._answered(int(message["status"]), t0)
                drain.close_after(message, also=gate.closed())
            await send(message)

        try:
            await self.app(scope, watching_receive, counting_send)
        except Exception:
            if not answered and not disconnected:  # uvicorn answers 500
                answered = True
                self._answered(500, t0)
            raise
        finally:
            # The client went away before any answer (the app saw it, e.g. Starlette's
            # ClientDisconnect while reading the body), or the app ended without answering.
            if not answered:
                self.abandoned.inc()


def _closing(send: Send) -> Send:
    """``send`` with ``Connection: close`` on the answer while the worker retires."""

    async def closing_send(message: Message) -> None:
        if message["type"] == "http.response.start":
            drain.close_after(message)
        await send(message)

    return closing_send


def worker_app(app: ASGIApp) -> Metered:
    """``app`` as a direct-data-path server's worker serves it (see the module): drain and gate
    installed in this worker, requests counted under the environment's labels.

    Args:
        app: the server's ASGI app.

    Returns:
        The counting app.
    """
    # This worker retires without dropping a kept-alive connection's next request (drain.py).
    drain.install()
    # A server with a gate takes the public socket when the deployer opens it (gate.py).
    gate.install()
    return Metered(app, os.environ.get(DEPLOYMENT_ENV, ""), os.environ.get(REVISION_ENV, ""))

"""An API worker of a `zmd-bentoml` server on the direct data path: BentoML's own worker
(``_bentoml_impl.worker.service``), serving its app through ``local/metering.worker_app``.

Runs inside the server process: circus starts it for each API worker of ``serve.py``'s
`bentoml serve` with BentoML's arguments (``<tag> --fd <descriptor> --service-name ...``).
BentoML's worker builds the service's ASGI app and runs ``uvicorn.Server(config).run`` on the
descriptor; here uvicorn's ``Config.load`` is wrapped so that the app it loads is the counting
one (``Metered``), and ``worker_app`` installs the draining retirement (``local/drain.py``) and
the gate (``local/gate.py``) in this worker before it serves. The worker's prometheus_client
files go to the revision's metrics folder (``PROMETHEUS_MULTIPROC_DIR``), where the front reads
the series of ours; BentoML's own series are written there too, and its ``/metrics`` reads them
from there.

Only the worker that serves the private port (the entry service's) gets a gate: a bento with
dependent services runs their workers through this module as well (circus starts every service's
workers from one script name), and they serve on their own sockets, never the public one.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from typing import Any

from zenml_model_deployers.flavors.bentoml.serve import METRICS_DIR_ENV
from zenml_model_deployers.local import gate


def _serves_private_port(argv: list[str]) -> bool:
    """Whether the descriptor BentoML passes (``--fd``) is the server's private port."""
    try:
        fd = int(argv[argv.index("--fd") + 1])
        with socket.socket(fileno=os.dup(fd)) as s:
            name = s.getsockname()
    except (ValueError, IndexError, OSError):
        return False
    port = os.environ.get(gate.PRIVATE_PORT_ENV, "")
    return isinstance(name, tuple) and str(name[1]) == port


class _GateLines(logging.Filter):
    """Lets the gate's lines through a logger BentoML sets to WARNING (``uvicorn.error``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.getMessage().startswith("zmd:")


def _count_requests() -> None:
    """Makes the app uvicorn loads in this worker the counting one (``worker_app``), and has
    the gate's lines logged (the deployer waits for them: ``LocalProcessService.gate_events``).
    """
    from uvicorn.config import Config

    from zenml_model_deployers.local.metering import worker_app

    original = Config.load

    def load(self: Any) -> None:
        original(self)
        self.loaded_app = worker_app(self.loaded_app)
        # BentoML's server logging (configured by its worker before this) keeps uvicorn's
        # INFO lines out; the gate's pass, once (the logger has BentoML's handler itself: no
        # second copy through the root's).
        log = logging.getLogger(gate.logger.name)
        log.addFilter(_GateLines())
        log.setLevel(min(log.level or logging.INFO, logging.INFO))
        log.propagate = not log.handlers

    Config.load = load  # type: ignore[method-assign]


def main() -> None:
    """Runs BentoML's API worker, counted and with a gate where it serves the private port."""
    if os.environ.get(gate.GATE_ENV) and _serves_private_port(sys.argv):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.environ[METRICS_DIR_ENV]
        _count_requests()
    else:
        for name in (gate.GATE_ENV, gate.HANDOFF_ENV):
            os.environ.pop(name, None)
    from _bentoml_impl.worker.service import main as bentoml_worker

    bentoml_worker()


if __name__ == "__main__":
    main()

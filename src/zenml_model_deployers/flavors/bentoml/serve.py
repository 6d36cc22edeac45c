"""The server process of a `zmd-bentoml` revision on the direct data path: `bentoml serve`,
with a gate in each API worker.

`bentoml serve <tag>` (BentoML 1.4, a ``@bentoml.service``) runs a circus arbiter that binds the
API server's socket itself (``CircusSocket``, on ``--host``/``--port``) and starts each API
worker as ``python -m _bentoml_impl.worker.service <tag> --fd $(circus.sockets.<name>) ...``:
uvicorn serving the service's ASGI app on that descriptor. This process runs the very same
command (``bentoml_cli``'s ``serve``, in this Python, as ``python -m bentoml serve`` does), with
one change: the workers run ``worker.py``, which serves the same app through
``local/metering.worker_app`` (the request counting, the draining retirement and the gate) and
then BentoML's own worker ``main``. So the server binds its private ``--port`` as before, is
checked there, and takes the front's public socket in each API worker while the gate file exists
(``local/gate.py``); nothing else of BentoML changes.

Usage: ``python -m zenml_model_deployers.flavors.bentoml.serve --listen-fd-from PATH
--accept-gate GATE --metrics-dir DIR --revision HASH --deployment NAME -- <bentoml serve's
arguments>`` (``LocalProcessService.gate_args``). Only the standard library is imported before
BentoML.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

# The module circus starts for each API worker (instead of BentoML's _SERVICE_WORKER_SCRIPT).
WORKER_MODULE = "zenml_model_deployers.flavors.bentoml.worker"
# What worker.py reads: the metrics folder (its PROMETHEUS_MULTIPROC_DIR).
METRICS_DIR_ENV = "ZMD_METRICS_DIR"


def main(args: list[str] | None = None) -> None:
    """Runs `bentoml serve` with the gate's environment set and its workers replaced.

    Args:
        args: command line (default: ``sys.argv[1:]``).

    Raises:
        SystemExit: the command line has no ``--`` before `bentoml serve`'s arguments (2), or
            the exit status of `bentoml serve`.
    """
    import sys

    argv = list(sys.argv[1:] if args is None else args)
    if "--" not in argv:
        raise SystemExit("usage: serve.py [gate options] -- <bentoml serve arguments>")
    cut = argv.index("--")
    ap = argparse.ArgumentParser(prog="zenml_model_deployers.flavors.bentoml.serve")
    ap.add_argument("--listen-fd-from", required=True, help="the front's handoff Unix socket")
    ap.add_argument("--accept-gate", required=True, help="take the socket while this file exists")
    ap.add_argument("--metrics-dir", required=True, help="count requests here")
    ap.add_argument("--revision", default="", help="the revision's config hash (metrics label)")
    ap.add_argument("--deployment", default="", help="the deployment's name (metrics label)")
    ns = ap.parse_args(argv[:cut])
    serve_args = argv[cut + 1 :]
    if "--port" not in serve_args:
        raise SystemExit("bentoml serve's arguments name no --port (the private port)")
    from zenml_model_deployers.local import gate, metering

    metrics_dir = Path(ns.metrics_dir)
    metrics_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    # circus' workers copy this environment (BentoML's create_watcher: copy_env=True).
    os.environ.update(
        {
            gate.GATE_ENV: ns.accept_gate,
            gate.HANDOFF_ENV: ns.listen_fd_from,
            gate.PRIVATE_PORT_ENV: serve_args[serve_args.index("--port") + 1],
            METRICS_DIR_ENV: str(metrics_dir),
            metering.DEPLOYMENT_ENV: ns.deployment,
            metering.REVISION_ENV: ns.revision,
        }
    )
    import _bentoml_impl.server.serving as serving
    from bentoml_cli.cli import cli

    if hasattr(serving, "_SERVICE_WORKER_SCRIPT"):
        serving._SERVICE_WORKER_SCRIPT = WORKER_MODULE  # read when `serve` builds its watchers
    else:  # another BentoML than the 1.4 this was built for: its own workers, no gate
        print(
            "zmd: this BentoML starts its workers another way: they take no gate (the relay "
            "serves this deployment)",
            file=sys.stderr,
            flush=True,
        )
    cli.main(args=["serve", *serve_args], prog_name="bentoml")


if __name__ == "__main__":
    main()

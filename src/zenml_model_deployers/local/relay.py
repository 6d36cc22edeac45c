"""The stable front of a local deployment: a small TCP relay that owns the deployment's port.

One relay process per deployment forwards each connection to the current revision's server
on a private port. An update starts the new server, waits until it is ready, then tells the
relay to `switch`: from then on every *new request* goes to the new server, including requests
on kept-alive connections (the relay moves a connection at the next request boundary: when the
client sends after having received response bytes). The old server is then stopped gracefully;
when it closes a connection:

- with a request sent and no response bytes back, the relay replays the request on the current
  server (the old server closed an idle connection just as the request arrived);
- with nothing pending, the client connection stays open and is reconnected to the current
  server on its next request (so clients never see the old server's close).

So a client looping on the URL sees no failed request during an update.

The relay reads each request's head and frames its body (``http1.py``), so that it can check an
optional API key (``Authorization: Bearer``, given in the environment as ``ZMD_RELAY_API_KEY``,
never in argv), refuse malformed or ambiguous requests before any server sees them, and bound
what a client may hold: head size and time, idle time, connections (an idle connection is
evicted for a new one; when none is idle the new one gets 503), and the bytes kept for replay
(a bigger request is forwarded without replay). Responses are piped through unparsed.

During a canary the relay routes a weighted share of requests to a second server (``split``),
choosing the server for each request at its boundary (a kept-alive connection moves between
them); the shares are exact over any run of 100 requests (a smooth weighted round robin).

It counts, per revision: requests, errors (5xx answers, connections the server refused,
connections it reset with a request in flight, requests the client gave up on before any
answer) and a latency histogram (time to the first response byte). They are served in
Prometheus format (``prometheus_client``) on a metrics port of their own (``GET /metrics``),
never on the deployment's port, so no model server route can collide; the ``metrics`` control
command returns the same counters now and as they were a window ago (``local/relay_metrics.py``).

The direct data path (``data_path="direct"``, see ``LocalProcessService``): the relay keeps the
deployment's listening socket and hands it, over a Unix socket in the deployment's private
directory (``--handoff``, SCM_RIGHTS), to a server that accepts on it itself; the ``accept``
command then takes the relay out of the path (it stops accepting; its remaining kept-alive
connections get ``Connection: close`` added to their next request, so each ends after its
answer) and puts it back in (while a revision is switched). Connections that arrive while no
process accepts wait in the socket's backlog.

Run as ``python -m zenml_model_deployers.local.relay``; controlled over a line-JSON protocol on
a second loopback port (``switch``, ``split``, ``drain``, ``accept``, ``status``, ``metrics``, ``fold``,
``secrets``: the supervised server's secret variables, kept in memory only). Every command
carries the token the relay writes into its ready file (created 0600): other users of the
machine cannot steer it. Only the standard library is imported at start so that the relay
starts in well under a second (``prometheus_client`` is imported at the first scrape).

This module is the relay process (its arguments, sockets and signals). Its parts:
``relay_forward.py`` (``Relay``: forwarding, canary routing, the defences against bad clients),
``relay_conn.py`` (one client connection and its server connection), ``relay_control.py`` (the
control channel, both ends), ``relay_metrics.py`` (the counters), ``http1.py`` (request framing),
``supervisor.py`` (restarting a crashed server).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

from zenml_model_deployers.local.relay_control import API_KEY_ENV, ControlServer, write_ready_file
from zenml_model_deployers.local.relay_forward import Limits, Relay


async def _main(args: argparse.Namespace) -> int:
    os.umask(0o077)  # whatever the relay writes is private
    api_key = os.environ.pop(API_KEY_ENV, None) or None
    # The limit options are named as Limits' fields.
    limits = Limits(**{f.name: getattr(args, f.name) for f in fields(Limits)})
    token = os.urandom(32).hex()
    relay = Relay(
        args.backend_host,
        args.target,
        api_key=api_key,
        limits=limits,
        deployment=args.deployment,
        open_paths=args.open_path,
        closed_paths=args.closed_path,
    )
    if args.metrics_dir:
        relay.metrics.multiproc_root = Path(args.metrics_dir)
    if args.target is not None and args.target_revision:
        relay.metrics.label(args.target, args.target_revision)
    try:
        # The socket is the front's for its whole life (a server may accept on it directly:
        # the direct data path); asyncio accepts on a duplicate that can be closed alone.
        family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
        lsock = socket.socket(family, socket.SOCK_STREAM)
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind((args.host, args.port))
        lsock.listen(1024)
        lsock.setblocking(False)
    except OSError as e:
        print(f"relay: cannot listen on {args.host}:{args.port}: {e.strerror}", flush=True)
        return 3
    relay.listen_sock = lsock
    await relay.accept(True)
    handoff = relay.handoff_listener(Path(args.handoff)) if args.handoff else None
    # A front that replaced this one (a moved URL) binds the same path: left alone at exit.
    handoff_ino = os.stat(args.handoff).st_ino if handoff is not None else None
    supervisor = None
    if args.supervise:  # the front also restarts a crashed server (local/supervisor.py)
        from zenml_model_deployers.local.supervisor import Supervisor

        supervisor = Supervisor(Path(args.supervise))

    async def command(msg: dict[str, Any]) -> dict[str, Any]:
        # The supervised server's secrets come here, over the authenticated channel, and
        # stay in this process's memory: never in a file or argv.
        if msg.get("cmd") == "secrets":
            if supervisor is None:
                return {"ok": False, "error": "this front supervises no server"}
            return supervisor.remember(msg)
        return await relay.command(msg)

    control = await asyncio.start_server(ControlServer(token, command).serve, "127.0.0.1", 0)
    try:
        metrics = await asyncio.start_server(
            relay.metrics.serve, args.metrics_host, args.metrics_port, reuse_address=True
        )
    except OSError as e:
        print(
            f"relay: cannot listen for metrics on {args.metrics_host}:{args.metrics_port}: "
            f"{e.strerror}",
            flush=True,
        )
        return 3
    sweeper = asyncio.get_running_loop().create_task(relay.sweep())
    port = lsock.getsockname()[1]
    cport = control.sockets[0].getsockname()[1]
    mport = metrics.sockets[0].getsockname()[1]
    write_ready_file(
        Path(args.ready_file),
        {
            "port": port,
            "control_port": cport,
            "metrics_port": mport,
            "pid": os.getpid(),
            "token": token,
        },
    )
    auth = "API key required" if api_key else "no API key"
    print(f"relay: listening on {args.host}:{port}, target {args.target}, {auth}", flush=True)
    supervision = None
    if supervisor is not None:
        supervision = (asyncio.get_running_loop().create_task(supervisor.run()), supervisor)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    sweeper.cancel()
    if supervision is not None:
        supervision[0].cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await supervision[0]
        await supervision[1].close()
    if relay.server is not None:
        relay.server.close()
    if handoff is not None:
        handoff.close()
        with contextlib.suppress(OSError):
            if os.stat(args.handoff).st_ino == handoff_ino:
                os.unlink(args.handoff)
    lsock.close()
    control.close()
    metrics.close()
    for c in list(relay.conns):
        relay._close(c)
    print("relay: stopped", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the relay process.

    Args:
        argv: command-line arguments.

    Returns:
        Exit code (3: the port is taken).

    The API key, if any, comes from the environment (``ZMD_RELAY_API_KEY``), never argv.
    """
    p = argparse.ArgumentParser(description="zmd stable-URL relay")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--backend-host", default="127.0.0.1")
    p.add_argument("--target", type=int, default=None)
    p.add_argument("--target-revision", default="", help="the target's revision (metrics label)")
    p.add_argument("--ready-file", required=True)
    d = Limits()
    p.add_argument("--max-head", type=int, default=d.max_head)
    p.add_argument("--header-timeout", type=float, default=d.header_timeout)
    p.add_argument("--idle-timeout", type=float, default=d.idle_timeout)
    p.add_argument("--max-connections", type=int, default=d.max_connections)
    p.add_argument("--replay-limit", type=int, default=d.replay_limit)
    p.add_argument("--supervise", default=None, help="supervise.json of the server to restart")
    p.add_argument("--deployment", default="", help="the deployment's name (metrics label)")
    p.add_argument("--metrics-host", default="127.0.0.1")
    p.add_argument("--metrics-port", type=int, default=0, help="0: any free port")
    p.add_argument(
        "--metrics-dir",
        default=None,
        help="direct-data-path servers' multiprocess metrics, one folder per revision",
    )
    p.add_argument("--handoff", default=None, help="Unix socket serving the listening socket")
    p.add_argument(
        "--open-path",
        action="append",
        default=[],
        help="a path answered without the API key (GET/HEAD), e.g. a health route",
    )
    p.add_argument(
        "--closed-path",
        action="append",
        default=[],
        help="a path (and what lies under it) refused to every client: a server's admin route",
    )
    args = p.parse_args(argv)
    try:
        import uvloop  # a dependency on POSIX: halves the latency the relay adds
    except ImportError:
        return asyncio.run(_main(args))
    return int(uvloop.run(_main(args)))


if __name__ == "__main__":
    sys.exit(main())

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

Run as ``python -m zenml_model_deployers.local.relay``; controlled over a line-JSON protocol on
a second loopback port (``switch``, ``drain``, ``status``). Only the standard library is imported
here so that the relay starts in well under a second.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

_READ = 65536


class _Conn:
    """One client connection and the backend it is currently piped to."""

    __slots__ = ("client_w", "backend_port", "backend_w", "gen", "pending", "closed")

    def __init__(self, client_w: asyncio.StreamWriter) -> None:
        self.client_w = client_w
        self.backend_port: int | None = None
        self.backend_w: asyncio.StreamWriter | None = None
        self.gen = 0
        self.pending = bytearray()  # client bytes not yet answered by any response byte
        self.closed = False


class Relay:
    """Forwards connections on a public port to the current target port."""

    def __init__(self, host: str, target: int | None) -> None:
        """Creates the relay (not yet listening).

        Args:
            host: the backend host (loopback).
            target: the initial backend port (None: refuse connections until `switch`).
        """
        self.host = host
        self.target = target
        self.conns: set[_Conn] = set()

    async def _connect(self, conn: _Conn) -> bool:
        if self.target is None:
            return False
        port = self.target
        try:
            reader, writer = await asyncio.open_connection(self.host, port)
        except OSError:
            return False
        old = conn.backend_w
        conn.gen += 1
        conn.backend_port = port
        conn.backend_w = writer
        if old is not None:
            old.close()
        asyncio.get_running_loop().create_task(self._pump_backend(conn, reader, conn.gen))
        return True

    async def handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        """Serves one client connection until either side closes it.

        Args:
            client_r: client reader.
            client_w: client writer.
        """
        conn = _Conn(client_w)
        self.conns.add(conn)
        try:
            if not await self._connect(conn):
                return
            while True:
                data = await client_r.read(_READ)
                if not data:
                    break
                idle = not conn.pending
                if conn.backend_w is None or (idle and conn.backend_port != self.target):
                    # At a request boundary and the backend changed (or is gone): move.
                    if not await self._connect(conn):
                        break
                conn.pending += data
                assert conn.backend_w is not None
                conn.backend_w.write(data)
                await conn.backend_w.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._close(conn)

    async def _pump_backend(self, conn: _Conn, reader: asyncio.StreamReader, gen: int) -> None:
        port = conn.backend_port
        try:
            while True:
                data = await reader.read(_READ)
                if conn.gen != gen or conn.closed:
                    return
                if not data:
                    break
                conn.pending.clear()
                conn.client_w.write(data)
                await conn.client_w.drain()
        except (ConnectionError, OSError):
            if conn.gen != gen or conn.closed:
                return
        # The backend closed this connection.
        if conn.gen != gen or conn.closed:
            return
        if conn.pending and port != self.target:
            # Closed while our request was in the air, by a server being retired: replay.
            payload = bytes(conn.pending)
            if await self._connect(conn) and conn.backend_w is not None:
                conn.backend_w.write(payload)
                with contextlib.suppress(ConnectionError, OSError):
                    await conn.backend_w.drain()
                return
        elif not conn.pending and port != self.target:
            # A retired server closed an idle connection: keep the client, reconnect lazily.
            conn.backend_w = None
            conn.backend_port = None
            return
        self._close(conn)

    def _close(self, conn: _Conn) -> None:
        if conn.closed:
            return
        conn.closed = True
        self.conns.discard(conn)
        for w in (conn.backend_w, conn.client_w):
            if w is not None:
                with contextlib.suppress(Exception):
                    w.close()

    def status(self) -> dict[str, Any]:
        """Current target and connection counts per backend port.

        Returns:
            A JSON-able dict.
        """
        per_port: dict[str, int] = {}
        inflight: dict[str, int] = {}
        for c in self.conns:
            key = str(c.backend_port)
            per_port[key] = per_port.get(key, 0) + 1
            if c.pending:
                inflight[key] = inflight.get(key, 0) + 1
        return {"target": self.target, "connections": per_port, "in_flight": inflight}

    async def drain(self, port: int, timeout: float) -> int:
        """Waits until no request is in flight on `port` (bounded).

        Args:
            port: the retired backend port.
            timeout: seconds.

        Returns:
            How many requests were still in flight at the deadline.
        """
        deadline = time.monotonic() + timeout
        while True:
            busy = sum(1 for c in self.conns if c.backend_port == port and c.pending)
            if busy == 0 or time.monotonic() >= deadline:
                return busy
            await asyncio.sleep(0.01)

    async def control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answers control commands, one JSON object per line.

        Args:
            reader: control reader.
            writer: control writer.
        """
        try:
            while line := await reader.readline():
                try:
                    msg = json.loads(line)
                    cmd = msg.get("cmd")
                    if cmd == "switch":
                        self.target = int(msg["port"])
                        reply: dict[str, Any] = {"ok": True, "target": self.target}
                    elif cmd == "drain":
                        left = await self.drain(int(msg["port"]), float(msg.get("timeout", 10)))
                        reply = {"ok": True, "in_flight": left}
                    elif cmd == "status":
                        reply = {"ok": True, **self.status()}
                    else:
                        reply = {"ok": False, "error": f"unknown command {cmd!r}"}
                except (ValueError, KeyError, TypeError) as e:
                    reply = {"ok": False, "error": str(e)}
                writer.write((json.dumps(reply) + "\n").encode())
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()


def _write_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


async def _main(args: argparse.Namespace) -> int:
    relay = Relay(args.backend_host, args.target)
    try:
        server = await asyncio.start_server(
            relay.handle, args.host, args.port, reuse_address=True, backlog=1024
        )
    except OSError as e:
        print(f"relay: cannot listen on {args.host}:{args.port}: {e.strerror}", flush=True)
        return 3
    control = await asyncio.start_server(relay.control, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    cport = control.sockets[0].getsockname()[1]
    _write_atomic(Path(args.ready_file), {"port": port, "control_port": cport, "pid": os.getpid()})
    print(f"relay: listening on {args.host}:{port}, target {args.target}", flush=True)
    supervision = None
    if args.supervise:  # the front also restarts a crashed server (local/supervisor.py)
        from zenml_model_deployers.local import supervisor

        supervision = supervisor.start(Path(args.supervise))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    if supervision is not None:
        supervision[0].cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await supervision[0]
        await supervision[1].close()
    server.close()
    control.close()
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
    """
    p = argparse.ArgumentParser(description="zmd stable-URL relay")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--backend-host", default="127.0.0.1")
    p.add_argument("--target", type=int, default=None)
    p.add_argument("--ready-file", required=True)
    p.add_argument("--supervise", default=None, help="supervise.json of the server to restart")
    args = p.parse_args(argv)
    try:
        import uvloop  # a dependency on POSIX: halves the latency the relay adds
    except ImportError:
        return asyncio.run(_main(args))
    return int(uvloop.run(_main(args)))


def port_is_free(host: str, port: int) -> bool:
    """Tells whether a TCP port can be bound on `host` right now.

    Args:
        host: address.
        port: port.

    Returns:
        True if free.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS considers free on `host`.

    Args:
        host: address.

    Returns:
        A port number.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


if __name__ == "__main__":
    sys.exit(main())

"""The relay's data plane: ``Relay`` accepts clients on the deployment's public socket and
forwards each request to the server of the current revision (or, during a canary, to the one
its share picks), moving kept-alive connections at request boundaries and replaying a request
a retiring server closed on (see ``local/relay.py`` for the whole picture).

The defences against bad clients sit in the same loop, where the bytes are read: bounded heads
(size and time), idle connections, a connection cap with eviction of the longest-idle one, and
bounded replay buffers (``Limits``). The per-connection objects are in ``relay_conn.py``; the
commands the control channel runs are ``Relay.command``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zenml_model_deployers.local import http1
from zenml_model_deployers.local.relay_conn import (
    BODY,
    HEAD,
    IDLE,
    READ_SIZE,
    Backend,
    ClientInput,
    Conn,
)
from zenml_model_deployers.local.relay_metrics import Metrics


@dataclass(frozen=True)
class Limits:
    """What one client may hold in the relay.

    Attributes:
        max_head: bytes of a request head (and of a chunk-size or trailer line).
        header_timeout: seconds to send a whole head once its first byte arrived.
        idle_timeout: seconds a connection may stay silent (between requests, or mid-body)
            while no response is on its way.
        max_connections: open client connections; past it the longest-idle connection is
            closed for the new one, or the new one is refused (503) when none is idle.
        replay_limit: request bytes kept to replay a request on the current server when a
            retiring server closes before answering; a bigger request is forwarded without.
    """

    max_head: int = 32 * 1024
    header_timeout: float = 10.0
    idle_timeout: float = 75.0
    max_connections: int = 1024
    replay_limit: int = 1 << 20


# A connection is evicted for a new one only after this long without traffic.
_EVICT_AFTER = 1.0
# A response is taken as complete after this long without bytes (the relay does not parse
# responses); only used before refusing a request that follows others on a connection.
_QUIET = 0.3
# How often deadlines are checked, and what a connection waits for from its client.
_SWEEP = 0.25


class Relay:
    """Forwards connections on a public port to the current target port."""

    def __init__(
        self,
        host: str,
        target: int | None,
        api_key: str | None = None,
        limits: Limits | None = None,
        deployment: str = "",
        open_paths: Iterable[str] = (),
    ) -> None:
        """Creates the relay (not yet listening).

        Args:
            host: the backend host (loopback).
            target: the initial backend port (None: refuse connections until `switch`).
            api_key: the key every request must carry as ``Authorization: Bearer`` (None: open).
            limits: what a client may hold.
            deployment: the deployment's name (a label of the metrics).
            open_paths: paths a GET or HEAD reaches without the key (e.g. a health route
                that a platform probes unauthenticated).
        """
        self.host = host
        self.target = target
        # During a canary: the candidate's port and its share of requests (percent).
        self.candidate: int | None = None
        self.weight = 0
        self._acc = 0  # smooth weighted round robin accumulator
        self.metrics = Metrics(deployment)
        self.api_key = api_key.encode() if api_key else None
        self.open_paths = frozenset(p.encode() for p in open_paths)
        self.limits = limits or Limits()
        self.conns: set[Conn] = set()
        self.refused = 0  # requests and connections refused (status, for tests and metrics)
        # The public listening socket (owned here for the whole life of the front) and the
        # asyncio server accepting on a duplicate of it (None: out of the data path).
        self.listen_sock: socket.socket | None = None
        self.server: asyncio.Server | None = None
        self.stepping_out = False  # not accepting: end kept-alive connections after an answer

    def _open(self, raw: bytes) -> bool:
        """Whether a request without the key may pass: a GET or HEAD of an open path (parsed
        only when the key is missing or wrong, off the usual path)."""
        if not self.open_paths:
            return False
        method, _, rest = raw.partition(b" ")
        target = rest.partition(b" ")[0].partition(b"?")[0]
        return method in (b"GET", b"HEAD") and target in self.open_paths

    def _route(self) -> int | None:
        """The server of the next request: during a canary, `weight` of every 100 requests go
        to the candidate, spread evenly (smooth weighted round robin, no randomness)."""
        if self.candidate is None:
            return self.target
        self._acc += self.weight
        if self._acc >= 100:
            self._acc -= 100
            return self.candidate
        return self.target

    def _live(self, port: int | None) -> bool:
        return port is not None and (port == self.target or port == self.candidate)

    async def _connect(self, conn: Conn, port: int | None = None) -> bool:
        if port is None:
            port = self.target
        if port is None:
            return False
        backend = Backend(self._backend_closed, conn, port)
        try:
            await asyncio.get_running_loop().create_connection(lambda: backend, self.host, port)
        except OSError:
            self.metrics.stats_for(port).error("refused")
            return False
        old = conn.backend_w
        conn.gen += 1
        backend.gen = conn.gen
        conn.backend_port = port
        conn.stats = self.metrics.stats_for(port)
        conn.backend_w = backend
        if old is not None:
            old.close()
        if conn.closed:  # the client left while we connected
            backend.close()
            return False
        return True

    async def handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        """Serves one client connection until either side closes it (never raises).

        Args:
            client_r: client reader.
            client_w: client writer.
        """
        conn = Conn(client_w)
        if not self._admit():
            self._refuse(conn, 503, "too many connections")
            return
        self.conns.add(conn)
        inp = ClientInput(client_r)
        try:
            while await self._relay_request(conn, inp):
                pass
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        except http1.BadRequest as e:
            await self._refuse_after_answers(conn, e.status, e.reason)
        except (TimeoutError, asyncio.LimitOverrunError, ValueError):
            await self._refuse_after_answers(conn, 400, "malformed or too slow request body")
        finally:
            self._close(conn)

    def _admit(self) -> bool:
        """Makes room for a new connection: evicts the longest-idle one when at the cap."""
        if len(self.conns) < self.limits.max_connections:
            return True
        quiet_since = time.monotonic() - _EVICT_AFTER
        idle = [
            c
            for c in self.conns
            if not c.unanswered and not c.in_request and c.last_activity < quiet_since
        ]
        if not idle:
            return False
        self._close(min(idle, key=lambda c: c.last_activity))
        return True

    def _refuse(self, conn: Conn, status: int, reason: str) -> None:
        self.refused += 1
        with contextlib.suppress(Exception):
            conn.client_w.write(http1.error_response(status, reason))
        self._close(conn)

    async def _refuse_after_answers(self, conn: Conn, status: int, reason: str) -> None:
        """Refuses a request that follows others on the connection only once their responses
        went quiet, so that the refusal never lands inside one of them (bounded wait)."""
        deadline = time.monotonic() + self.limits.idle_timeout
        while not conn.closed and time.monotonic() < deadline:
            if not conn.unanswered and time.monotonic() - conn.last_response >= _QUIET:
                break
            await asyncio.sleep(0.05)
        self._refuse(conn, status, reason)

    async def _read_head(self, conn: Conn, inp: ClientInput) -> bytes | None:
        """The next request head, or None when the client left (or the sweep closed it)."""
        buf = inp.buf
        if buf:
            conn.phase, conn.head_started = HEAD, time.monotonic()
        else:
            conn.phase = IDLE
        while (i := buf.find(b"\r\n\r\n")) < 0:
            if len(buf) > self.limits.max_head:
                raise http1.BadRequest(431, "request head too large")
            if not await inp.fill():
                if not buf:
                    await self._finish_half_closed(conn)
                return None
            if conn.phase == IDLE:
                conn.phase, conn.head_started = HEAD, time.monotonic()
        if i + 4 > self.limits.max_head:
            raise http1.BadRequest(431, "request head too large")
        conn.phase = BODY
        return inp.take(i + 4)

    async def sweep(self) -> None:
        """Ends connections past their deadlines (cheaper than a timer per read): a head not
        complete within `header_timeout` (408), a body silent for `idle_timeout` (408), a
        connection idle for `idle_timeout` with no response on its way (closed quietly)."""
        limits = self.limits
        while True:
            await asyncio.sleep(_SWEEP)
            now = time.monotonic()
            self.metrics.tick(now)
            for c in list(self.conns):
                if c.phase == HEAD and now - c.head_started > limits.header_timeout:
                    self._refuse(c, 408, "request head not received in time")
                elif c.phase == BODY and c.in_request:
                    if now - c.last_activity > limits.idle_timeout:
                        self._refuse(c, 408, "request body not received in time")
                elif c.phase == IDLE and not c.unanswered:
                    if now - c.last_activity > limits.idle_timeout:
                        self._close(c)

    async def _finish_half_closed(self, conn: Conn) -> None:
        """The client sent all it will send (half-close): pass that on to the server and let
        the answers to what was sent come back before closing (bounded)."""
        if conn.closed or conn.backend_w is None or conn.backend_port is None:
            return
        conn.client_eof = True
        with contextlib.suppress(Exception):
            conn.backend_w.write_eof()
        deadline = time.monotonic() + self.limits.idle_timeout
        while not conn.closed and time.monotonic() < deadline:
            if not conn.unanswered and time.monotonic() - conn.last_response >= _QUIET:
                break
            await asyncio.sleep(0.05)

    async def _relay_request(self, conn: Conn, inp: ClientInput) -> bool:
        """Forwards one request (head and body) to the connection's server.

        Returns:
            False when the connection is done (client gone, refused or idle too long).
        """
        raw = await self._read_head(conn, inp)
        if raw is None:
            return False
        if raw == conn.last_raw:
            # A kept-alive client repeating the same head (the usual case): same bytes, same
            # parse; saves the parse on most requests.
            head = conn.last_head
        else:
            head = conn.last_head = http1.parse_head(raw)
            conn.last_raw = raw
        if (
            self.api_key is not None
            and not http1.bearer_matches(head.authorization, self.api_key)
            and not self._open(raw)
        ):
            self._refuse(conn, 401, "missing or wrong API key (Authorization: Bearer <key>)")
            return False
        if conn.unanswered:
            # Pipelined: its responses must all come from one server, and cannot be replayed.
            conn.pinned = True
            conn.replayable = False
            conn.pending.clear()
        elif conn.backend_w is None or not conn.pinned:
            # At a request boundary: the server of this request (the backend may have changed,
            # or a canary splits requests); move when it is another one (or gone).
            port = self.target if self.candidate is None else self._route()
            if conn.backend_w is None or conn.backend_port != port:
                if not await self._connect(conn, port):
                    self._refuse(conn, 503, "no server is serving this deployment")
                    return False
        if not conn.unanswered:
            conn.pending.clear()
            conn.replayable = not conn.pinned and not head.expect_continue
        conn.in_request = True
        if self.stepping_out and not conn.pinned:
            # Out of the data path: this connection's server answers with `Connection: close`
            # and closes it after this answer; the client's next connection reaches the
            # server that accepts on the socket now.
            raw = raw[:-2] + b"Connection: close\r\n\r\n"
        if head.chunked:
            await self._forward_chunked(conn, inp, raw)
        else:
            left = head.content_length
            out = raw
            if left and not head.expect_continue:
                buffered = len(inp.buf)
                if buffered >= left:  # the whole body came with the head (small requests)
                    piece = inp.take(left)
                else:
                    piece = await inp.some(min(left, READ_SIZE))
                left -= len(piece)
                out = raw + piece
            await self._forward(conn, out)
            while left:
                piece = await inp.some(min(left, READ_SIZE))
                left -= len(piece)
                await self._forward(conn, piece)
        conn.in_request = False
        return not conn.closed

    async def _forward_chunked(self, conn: Conn, inp: ClientInput, head: bytes) -> None:
        """Forwards a chunked body as it comes, checking its framing (the head goes with the
        first chunk-size line, so a body malformed from its start never reaches the server)."""
        while True:
            line = await inp.line(self.limits.max_head)
            size = http1.parse_chunk_size(line)
            await self._forward(conn, head + line)
            head = b""
            if size == 0:
                break
            while size:
                piece = await inp.some(min(size, READ_SIZE))
                size -= len(piece)
                await self._forward(conn, piece)
            if await inp.line(self.limits.max_head) != b"\r\n":
                raise http1.BadRequest(400, "chunk longer than its size")
            await self._forward(conn, b"\r\n")
        trailers = 0
        while (line := await inp.line(self.limits.max_head)) != b"\r\n":
            trailers += len(line)
            if trailers > self.limits.max_head:
                raise http1.BadRequest(431, "trailer fields too large")
            await self._forward(conn, line)
        await self._forward(conn, line)

    async def _forward(self, conn: Conn, data: bytes) -> None:
        """Sends request bytes to the connection's server, keeping them for replay if they fit."""
        now = time.monotonic()
        if not conn.unanswered:  # a request's first bytes: its latency counts from here
            conn.t_req = now
        conn.unanswered = True
        conn.last_activity = now
        if conn.replayable:
            if len(conn.pending) + len(data) <= self.limits.replay_limit:
                conn.pending += data
            else:  # past the bound: forwarded without replay (bounded memory)
                conn.replayable = False
                conn.pending.clear()
        w = conn.backend_w
        if w is None:
            raise ConnectionError("no backend connection")
        w.write(data)
        if w.paused:
            await w.drain()

    async def _backend_closed(self, conn: Conn, backend: Backend) -> None:
        """The server closed a connection (or it broke): replay, keep the client, or close."""
        port = backend.port
        if conn.gen != backend.gen or conn.closed:
            return
        if conn.client_eof and not conn.unanswered:
            self._close(conn)
            return
        if conn.unanswered and conn.replayable and conn.pending and not self._live(port):
            # Closed while our request was in the air, by a server being retired: replay.
            payload = bytes(conn.pending)
            if await self._connect(conn) and conn.backend_w is not None:
                try:
                    conn.backend_w.write(payload)
                    await conn.backend_w.drain()
                except (ConnectionError, OSError):
                    self._close(conn)  # the current server failed too: the client sees it
                return
        elif not conn.unanswered and not conn.pinned and not self._live(port):
            # A retired server closed an idle connection: keep the client, reconnect lazily.
            conn.backend_w = None
            conn.backend_port = None
            return
        if conn.unanswered and conn.stats is not None:
            conn.stats.error("reset")  # closed with our request unanswered, no replay
            conn.unanswered = False
        self._close(conn)

    def _close(self, conn: Conn) -> None:
        if conn.closed:
            return
        conn.closed = True
        self.conns.discard(conn)
        if conn.unanswered and conn.stats is not None and not conn.in_request:
            conn.stats.error("abandoned")  # the client gave up (or timed out) before an answer
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
            if c.unanswered:
                inflight[key] = inflight.get(key, 0) + 1
        return {
            "target": self.target,
            "candidate": self.candidate,
            "candidate_percent": self.weight if self.candidate is not None else 0,
            "connections": per_port,
            "in_flight": inflight,
            "refused": self.refused,
            "accepting": self.server is not None,
        }

    async def accept(self, on: bool, timeout: float = 10.0) -> int:
        """Puts the relay into the data path (accepting on the public socket) or takes it out.

        Out: it stops accepting (the socket stays open and listening: another process accepts
        on it), and waits (bounded) until its own connections ended: each gets
        ``Connection: close`` on its next request; idle ones left at the deadline are closed.

        Args:
            on: accept (True) or step out (False).
            timeout: seconds to wait for the connections to end when stepping out.

        Returns:
            Connections the relay still had at the deadline (closed).
        """
        if on:
            self.stepping_out = False
            if self.server is None and self.listen_sock is not None:
                self.server = await asyncio.start_server(
                    self.handle, sock=self.listen_sock.dup(), limit=self.limits.max_head
                )
            return 0
        self.stepping_out = True
        if self.server is not None:
            self.server.close()  # closes the duplicate only: the socket keeps listening
            self.server = None
        deadline = time.monotonic() + timeout
        while self.conns and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        left = len(self.conns)
        for c in list(self.conns):
            if not c.unanswered and not c.in_request:
                self._close(c)
        return left

    def handoff_listener(self, path: Path) -> socket.socket:
        """Serves the public listening socket to the server that accepts on it (SCM_RIGHTS)
        on a Unix socket at ``path`` (mode 0600, in the deployment's private directory).

        Args:
            path: the Unix socket's path.

        Returns:
            The listening Unix socket (non-blocking, read by the event loop).
        """
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        hs = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        hs.bind(str(path))
        os.chmod(path, 0o600)
        hs.listen(16)
        hs.setblocking(False)

        def on_accept() -> None:
            try:
                c, _ = hs.accept()
            except OSError:
                return
            with c:
                c.settimeout(2)
                if self.listen_sock is not None:
                    with contextlib.suppress(OSError):
                        socket.send_fds(c, [b"L"], [self.listen_sock.fileno()])

        asyncio.get_running_loop().add_reader(hs.fileno(), on_accept)
        return hs

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
            busy = sum(1 for c in self.conns if c.backend_port == port and c.unanswered)
            if busy == 0 or time.monotonic() >= deadline:
                return busy
            await asyncio.sleep(0.01)

    async def command(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Runs one control command (authenticated by ``relay_control.ControlServer``).

        Args:
            msg: the command: ``switch``, ``split``, ``metrics``, ``fold``, ``accept``,
                ``drain`` or ``status``, with its arguments.

        Returns:
            The reply (``{"ok": false, ...}`` for an unknown command).
        """
        cmd = msg.get("cmd")
        if cmd == "switch":
            self.target = int(msg["port"])
            self.candidate, self.weight = None, 0
            if msg.get("revision"):
                self.metrics.label(self.target, str(msg["revision"]))
            if "api_key" in msg:
                key = msg["api_key"]
                self.api_key = str(key).encode() if key else None
            return {"ok": True, "target": self.target}
        if cmd == "split":
            percent = int(msg["percent"])
            if not 0 <= percent <= 100:
                raise ValueError(f"percent {percent} is out of range 0-100")
            stable, candidate = int(msg["port"]), int(msg["candidate"])
            for port, rev in (
                (stable, msg.get("revision")),
                (candidate, msg.get("candidate_revision")),
            ):
                if rev:
                    self.metrics.label(port, str(rev))
            self.target, self.candidate, self.weight, self._acc = stable, candidate, percent, 0
            return {"ok": True, "target": self.target, "candidate": candidate, "percent": percent}
        if cmd == "metrics":
            return {"ok": True, **self.metrics.window(float(msg.get("window", 300)))}
        if cmd == "fold":  # direct servers retired: their counts become the relay's own
            return {"ok": True, "folded": self.metrics.fold(str(msg.get("keep", "")))}
        if cmd == "accept":
            left = await self.accept(bool(msg["on"]), float(msg.get("timeout", 10)))
            return {"ok": True, "accepting": self.server is not None, "left": left}
        if cmd == "drain":
            left = await self.drain(int(msg["port"]), float(msg.get("timeout", 10)))
            return {"ok": True, "in_flight": left}
        if cmd == "status":
            return {"ok": True, **self.status()}
        return {"ok": False, "error": f"unknown command {cmd!r}"}

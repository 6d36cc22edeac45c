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
a second loopback port (``switch``, ``split``, ``drain``, ``accept``, ``status``, ``metrics``, ``fold``). Every command
carries the token the relay writes into its ready file (created 0600): other users of the
machine cannot steer it. Only the standard library is imported at start so that the relay
starts in well under a second (``prometheus_client`` is imported at the first scrape).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import json
import os
import signal
import socket
import sys
import time
from bisect import bisect_left
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from zenml_model_deployers.local import http1
from zenml_model_deployers.local.relay_metrics import BOUNDS, Metrics, RevisionStats

_READ = 65536
# A client's unsent response bytes past which the relay stops reading its server.
_HIGH_WATER = 256 * 1024
API_KEY_ENV = "ZMD_RELAY_API_KEY"


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
_CONTROL_IDLE = 30.0
_IDLE, _HEAD, _BODY = 0, 1, 2


class _Input:
    """A client's bytes, read in large pieces and framed from one buffer (one read per
    request in the common case, instead of one per head, line and body)."""

    __slots__ = ("reader", "buf")

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
        self.buf = bytearray()

    async def fill(self) -> bool:
        data = await self.reader.read(_READ)
        self.buf += data
        return bool(data)

    def take(self, n: int) -> bytes:
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    async def some(self, n: int) -> bytes:
        """Between 1 and n bytes (IncompleteReadError at the end of the stream)."""
        if not self.buf and not await self.fill():
            raise asyncio.IncompleteReadError(b"", n)
        return self.take(n)

    async def line(self, limit: int) -> bytes:
        """The next line, CRLF included (BadRequest past `limit` bytes)."""
        while (i := self.buf.find(b"\r\n")) < 0:
            if len(self.buf) > limit:
                raise http1.BadRequest(400, "line too long")
            if not await self.fill():
                raise asyncio.IncompleteReadError(bytes(self.buf), None)
        if i + 2 > limit:
            raise http1.BadRequest(400, "line too long")
        return self.take(i + 2)


class _Backend(asyncio.Protocol):
    """The relay's connection to a server, as a protocol: a response's bytes go to the client
    from the data callback (no task wakeup, no future per chunk: the relay's main per-request
    cost), with flow control both ways. ``write``/``drain``/``close``/``write_eof`` stand in
    for a StreamWriter's."""

    __slots__ = ("relay", "conn", "gen", "port", "transport", "paused", "waiter", "lost", "done")

    def __init__(self, relay: Relay, conn: _Conn, port: int) -> None:
        self.relay = relay
        self.conn = conn
        self.gen = -1  # set once the connection is the conn's current one
        self.port = port
        self.transport: asyncio.Transport | None = None
        self.paused = False  # the server's socket buffer is full: wait before sending more
        self.waiter: asyncio.Future[None] | None = None
        self.lost = False
        self.done = False  # the close was handled

    # ----------------------------------------------------------------- protocol callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: same interface.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        if conn.gen != self.gen or conn.closed:
            return
        now = time.monotonic()
        if conn.unanswered:  # the first bytes of an answer: count the request
            st = conn.stats
            if st is not None:
                lat = now - conn.t_req
                st.requests += 1
                st.lat_sum += lat
                st.buckets[bisect_left(BOUNDS, lat)] += 1
                if data[9:10] == b"5" and data[:5] == b"HTTP/":
                    st.error("5xx")
            conn.unanswered = False
        if conn.pending:
            conn.pending.clear()
        conn.last_activity = conn.last_response = now
        t = conn.client_t
        t.write(data)
        if t.get_write_buffer_size() > _HIGH_WATER and self.transport is not None:
            # A slow client: stop reading the server until the client took what it has.
            self.transport.pause_reading()
            asyncio.get_running_loop().create_task(self._resume_after(conn.client_w))

    async def _resume_after(self, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await w.drain()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def eof_received(self) -> bool:
        self._ended()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._wake()
        self._ended()

    def _ended(self) -> None:
        conn = self.conn
        if conn.gen == self.gen and not conn.closed and not self.done:
            self.done = True
            asyncio.get_running_loop().create_task(self.relay._backend_closed(conn, self))

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)
        self.waiter = None

    # ----------------------------------------------------------------- the writer's side
    def write(self, data: bytes) -> None:
        if self.transport is None or self.lost:
            raise ConnectionError("the server closed the connection")
        self.transport.write(data)

    async def drain(self) -> None:
        if self.lost:
            raise ConnectionError("the server closed the connection")
        if self.paused:
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
            if self.lost:
                raise ConnectionError("the server closed the connection")

    def write_eof(self) -> None:
        if self.transport is not None and self.transport.can_write_eof():
            self.transport.write_eof()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class _Conn:
    """One client connection and the backend it is currently piped to."""

    __slots__ = (
        "client_w",
        "backend_port",
        "backend_w",
        "gen",
        "pending",
        "unanswered",
        "replayable",
        "pinned",
        "in_request",
        "last_activity",
        "last_response",
        "client_eof",
        "phase",
        "head_started",
        "last_raw",
        "last_head",
        "closed",
        "stats",
        "t_req",
        "client_t",
    )

    def __init__(self, client_w: asyncio.StreamWriter) -> None:
        self.client_w = client_w
        self.client_t: asyncio.WriteTransport = client_w.transport
        self.backend_port: int | None = None
        self.backend_w: _Backend | None = None
        self.gen = 0
        self.pending = bytearray()  # unanswered request bytes kept for replay (bounded)
        self.unanswered = False  # request bytes sent that no response byte followed yet
        self.replayable = True  # `pending` holds the whole unanswered request
        self.pinned = False  # pipelining client: never moved to another server
        self.in_request = False  # a request's body is being forwarded
        self.last_activity = time.monotonic()
        self.last_response = 0.0
        self.client_eof = False  # the client half-closed: close once the server has answered
        self.phase = _IDLE  # what the client is expected to send (see Relay.sweep)
        self.head_started = 0.0
        self.last_raw = b""  # the previous request head and its parse (see _relay_request)
        self.last_head = http1.RequestHead()
        self.closed = False
        self.stats: RevisionStats | None = None  # the counters of the revision it is piped to
        self.t_req = 0.0  # when the unanswered request was sent


class Relay:
    """Forwards connections on a public port to the current target port."""

    def __init__(
        self,
        host: str,
        target: int | None,
        api_key: str | None = None,
        limits: Limits | None = None,
        token: str = "",
        deployment: str = "",
    ) -> None:
        """Creates the relay (not yet listening).

        Args:
            host: the backend host (loopback).
            target: the initial backend port (None: refuse connections until `switch`).
            api_key: the key every request must carry as ``Authorization: Bearer`` (None: open).
            limits: what a client may hold.
            token: the control channel's token ("" refuses every control command).
            deployment: the deployment's name (a label of the metrics).
        """
        self.host = host
        self.target = target
        # During a canary: the candidate's port and its share of requests (percent).
        self.candidate: int | None = None
        self.weight = 0
        self._acc = 0  # smooth weighted round robin accumulator
        self.metrics = Metrics(deployment)
        self.api_key = api_key.encode() if api_key else None
        self.limits = limits or Limits()
        self.token = token.encode()
        self.conns: set[_Conn] = set()
        self.refused = 0  # requests and connections refused (status, for tests and metrics)
        # The public listening socket (owned here for the whole life of the front) and the
        # asyncio server accepting on a duplicate of it (None: out of the data path).
        self.listen_sock: socket.socket | None = None
        self.server: asyncio.Server | None = None
        self.stepping_out = False  # not accepting: end kept-alive connections after an answer

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

    async def _connect(self, conn: _Conn, port: int | None = None) -> bool:
        if port is None:
            port = self.target
        if port is None:
            return False
        backend = _Backend(self, conn, port)
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
        conn = _Conn(client_w)
        if not self._admit():
            self._refuse(conn, 503, "too many connections")
            return
        self.conns.add(conn)
        inp = _Input(client_r)
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

    def _refuse(self, conn: _Conn, status: int, reason: str) -> None:
        self.refused += 1
        with contextlib.suppress(Exception):
            conn.client_w.write(http1.error_response(status, reason))
        self._close(conn)

    async def _refuse_after_answers(self, conn: _Conn, status: int, reason: str) -> None:
        """Refuses a request that follows others on the connection only once their responses
        went quiet, so that the refusal never lands inside one of them (bounded wait)."""
        deadline = time.monotonic() + self.limits.idle_timeout
        while not conn.closed and time.monotonic() < deadline:
            if not conn.unanswered and time.monotonic() - conn.last_response >= _QUIET:
                break
            await asyncio.sleep(0.05)
        self._refuse(conn, status, reason)

    async def _read_head(self, conn: _Conn, inp: _Input) -> bytes | None:
        """The next request head, or None when the client left (or the sweep closed it)."""
        buf = inp.buf
        if buf:
            conn.phase, conn.head_started = _HEAD, time.monotonic()
        else:
            conn.phase = _IDLE
        while (i := buf.find(b"\r\n\r\n")) < 0:
            if len(buf) > self.limits.max_head:
                raise http1.BadRequest(431, "request head too large")
            if not await inp.fill():
                if not buf:
                    await self._finish_half_closed(conn)
                return None
            if conn.phase == _IDLE:
                conn.phase, conn.head_started = _HEAD, time.monotonic()
        if i + 4 > self.limits.max_head:
            raise http1.BadRequest(431, "request head too large")
        conn.phase = _BODY
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
                if c.phase == _HEAD and now - c.head_started > limits.header_timeout:
                    self._refuse(c, 408, "request head not received in time")
                elif c.phase == _BODY and c.in_request:
                    if now - c.last_activity > limits.idle_timeout:
                        self._refuse(c, 408, "request body not received in time")
                elif c.phase == _IDLE and not c.unanswered:
                    if now - c.last_activity > limits.idle_timeout:
                        self._close(c)

    async def _finish_half_closed(self, conn: _Conn) -> None:
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

    async def _relay_request(self, conn: _Conn, inp: _Input) -> bool:
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
        if self.api_key is not None and not http1.bearer_matches(head.authorization, self.api_key):
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
                    piece = await inp.some(min(left, _READ))
                left -= len(piece)
                out = raw + piece
            await self._forward(conn, out)
            while left:
                piece = await inp.some(min(left, _READ))
                left -= len(piece)
                await self._forward(conn, piece)
        conn.in_request = False
        return not conn.closed

    async def _forward_chunked(self, conn: _Conn, inp: _Input, head: bytes) -> None:
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
                piece = await inp.some(min(size, _READ))
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

    async def _forward(self, conn: _Conn, data: bytes) -> None:
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

    async def _backend_closed(self, conn: _Conn, backend: _Backend) -> None:
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

    def _close(self, conn: _Conn) -> None:
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

    async def control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answers control commands, one JSON object per line, each carrying the token.

        A command without the right token is refused, logged, and ends the connection.

        Args:
            reader: control reader.
            writer: control writer.
        """
        try:
            while True:
                # A silent control connection is not kept: its next command has a deadline.
                async with asyncio.timeout(_CONTROL_IDLE):
                    line = await reader.readline()
                if not line:
                    break
                try:
                    msg = json.loads(line)
                    if not isinstance(msg, dict):
                        raise TypeError("a command is a JSON object")
                    if not self._authentic(msg.get("token")):
                        peer = writer.get_extra_info("peername")
                        print(
                            f"relay: refused an unauthenticated control command "
                            f"{str(msg.get('cmd'))[:20]!r} from {peer}",
                            flush=True,
                        )
                        writer.write(b'{"ok": false, "error": "unauthenticated"}\n')
                        await writer.drain()
                        return
                    reply = await self._command(msg)
                except (ValueError, KeyError, TypeError) as e:
                    reply = {"ok": False, "error": str(e)}
                writer.write((json.dumps(reply) + "\n").encode())
                await writer.drain()
        except (ConnectionError, OSError, ValueError, TimeoutError):
            pass
        finally:
            writer.close()

    def _authentic(self, token: Any) -> bool:
        given = token.encode() if isinstance(token, str) else b""
        return bool(self.token) and hmac.compare_digest(given, self.token)

    async def _command(self, msg: dict[str, Any]) -> dict[str, Any]:
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


def _write_atomic(path: Path, data: dict[str, Any]) -> None:
    """Writes a JSON file readable by its owner only (it holds the control token)."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(json.dumps(data))
    os.replace(tmp, path)


def read_ready_file(path: Path) -> dict[str, Any]:
    """What a running relay wrote at start: ports, pid and the control token.

    Args:
        path: the ready file.

    Returns:
        The JSON object.
    """
    info: dict[str, Any] = json.loads(path.read_text())
    return info


def control_request(
    port: int, token: str, msg: dict[str, Any], timeout: float = 30
) -> dict[str, Any]:
    """Sends one control command to a relay and returns its reply.

    Args:
        port: the relay's control port (loopback).
        token: the control token from its ready file.
        msg: the command, e.g. ``{"cmd": "status"}``.
        timeout: seconds.

    Returns:
        The reply (``{"ok": false, ...}`` when refused; empty when the relay closed).
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall((json.dumps({**msg, "token": token}) + "\n").encode())
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    reply: dict[str, Any] = json.loads(buf or b"{}")
    return reply


async def _main(args: argparse.Namespace) -> int:
    os.umask(0o077)  # whatever the relay writes is private
    api_key = os.environ.pop(API_KEY_ENV, None) or None
    limits = Limits(
        max_head=args.max_head,
        header_timeout=args.header_timeout,
        idle_timeout=args.idle_timeout,
        max_connections=args.max_connections,
        replay_limit=args.replay_limit,
    )
    token = os.urandom(32).hex()
    relay = Relay(
        args.backend_host,
        args.target,
        api_key=api_key,
        limits=limits,
        token=token,
        deployment=args.deployment,
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
    control = await asyncio.start_server(relay.control, "127.0.0.1", 0)
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
    _write_atomic(
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
    if args.supervise:  # the front also restarts a crashed server (local/supervisor.py)
        from zenml_model_deployers.local import supervisor

        supervision = supervisor.start(Path(args.supervise))
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

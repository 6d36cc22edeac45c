"""One client connection inside the relay (``local/relay_forward.py``): the client's input
buffer, the connection's state, and its connection to a server (an asyncio Protocol that writes
a response's bytes to the client from its data callback).

These sit in the data path: every attribute is a slot, and a response chunk costs one callback
and one write.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from bisect import bisect_left
from collections.abc import Callable, Coroutine
from typing import Any, cast

from zenml_model_deployers.local import http1
from zenml_model_deployers.local.relay_metrics import BOUNDS, RevisionStats

READ_SIZE = 65536
# A client's unsent response bytes past which the relay stops reading its server.
_HIGH_WATER = 256 * 1024
# What a client is expected to send next (see Relay.sweep).
IDLE, HEAD, BODY = 0, 1, 2


class ClientInput:
    """A client's bytes, read in large pieces and framed from one buffer (one read per
    request in the common case, instead of one per head, line and body)."""

    __slots__ = ("reader", "buf")

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
        self.buf = bytearray()

    async def fill(self) -> bool:
        data = await self.reader.read(READ_SIZE)
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


class Backend(asyncio.Protocol):
    """The relay's connection to a server, as a protocol: a response's bytes go to the client
    from the data callback (no task wakeup, no future per chunk: the relay's main per-request
    cost), with flow control both ways. ``write``/``drain``/``close``/``write_eof`` stand in
    for a StreamWriter's."""

    __slots__ = (
        "on_closed",
        "conn",
        "gen",
        "port",
        "transport",
        "paused",
        "waiter",
        "lost",
        "done",
    )

    def __init__(self, on_closed: OnClosed, conn: Conn, port: int) -> None:
        self.on_closed = on_closed  # the relay's handler of a closed server connection
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
            asyncio.get_running_loop().create_task(self.on_closed(conn, self))

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


class Conn:
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
        self.backend_w: Backend | None = None
        self.gen = 0
        self.pending = bytearray()  # unanswered request bytes kept for replay (bounded)
        self.unanswered = False  # request bytes sent that no response byte followed yet
        self.replayable = True  # `pending` holds the whole unanswered request
        self.pinned = False  # pipelining client: never moved to another server
        self.in_request = False  # a request's body is being forwarded
        self.last_activity = time.monotonic()
        self.last_response = 0.0
        self.client_eof = False  # the client half-closed: close once the server has answered
        self.phase = IDLE  # what the client is expected to send (see Relay.sweep)
        self.head_started = 0.0
        self.last_raw = b""  # the previous request head and its parse (see _relay_request)
        self.last_head = http1.RequestHead()
        self.closed = False
        self.stats: RevisionStats | None = None  # the counters of the revision it is piped to
        self.t_req = 0.0  # when the unanswered request was sent


# What the relay does when a server closes a connection (or it breaks).
OnClosed = Callable[[Conn, Backend], Coroutine[Any, Any, None]]

"""Relays and recording backends for the relay's tests (plain HTTP servers, no model server).

Import the fixture by name into a test module (``from relay_support import start_relay``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from zenml_model_deployers.local.relay_control import API_KEY_ENV, control_request

KEY = "k3y-for-the-relay-tests-0123456789"


# --------------------------------------------------------------------------- a recording backend
class Backend:
    """A plain HTTP/1.1 server that records every request it receives (path, body)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.seen: list[tuple[str, bytes]] = []
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _read_body(self) -> tuple[bytes, int]:
                """(the body, kept only when small; its size)."""
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b""):
                                pass
                            return out, len(out)
                        out += self.rfile.read(size)
                        self.rfile.readline()
                n = int(self.headers.get("Content-Length", 0))
                kept, got = b"", 0
                while got < n:  # a large body is counted, not kept
                    piece = self.rfile.read(min(1 << 20, n - got))
                    if not piece:
                        break
                    got += len(piece)
                    if n <= 1 << 16:
                        kept += piece
                return kept, got

            def _answer(self) -> None:
                body, size = self._read_body()
                backend.seen.append((self.path, body))
                if self.path == "/slow":
                    time.sleep(2)
                out = json.dumps({"answer": backend.name, "path": self.path, "len": size}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_POST = _answer  # noqa: N815
            do_GET = _answer  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Relay:
    proc: subprocess.Popen[bytes]
    port: int
    control_port: int
    token: str
    log: Path
    backends: list[Backend] = field(default_factory=list)

    def control(self, msg: dict[str, Any]) -> dict[str, Any]:
        return control_request(self.control_port, self.token, msg, timeout=10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def raw(self, data: bytes, timeout: float = 5.0, shut: bool = True) -> bytes:
        """Sends bytes on a new connection and returns everything the relay answers."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall(data)
            if shut:
                try:
                    s.shutdown(socket.SHUT_WR)
                except OSError:  # the relay already answered and closed (e.g. at its cap)
                    pass
            return read_all(s)


def read_all(s: socket.socket) -> bytes:
    out = b""
    while True:
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        out += chunk
    return out


def read_response(s: socket.socket) -> dict[str, Any]:
    """Reads one Content-Length response from a socket and returns its JSON body."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        assert chunk, f"closed before a whole head: {buf!r}"
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    n = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    while len(body) < n:
        chunk = s.recv(65536)
        assert chunk, "closed before a whole body"
        body += chunk
    out: dict[str, Any] = json.loads(body)
    return out


StartRelay = Callable[..., Relay]


@pytest.fixture
def start_relay(tmp_path: Path) -> Iterator[StartRelay]:
    """Starts relays (args: extra relay options, key: API key) in front of a backend 'old'."""
    started: list[Relay] = []

    def start(*args: str, key: str | None = None) -> Relay:
        old = Backend("old")
        n = len(started)
        ready = tmp_path / f"ready-{n}.json"
        log = tmp_path / f"relay-{n}.log"
        env = dict(os.environ)
        env.pop(API_KEY_ENV, None)
        if key:
            env[API_KEY_ENV] = key
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "zenml_model_deployers.local.relay", "--port", "0"]
                + ["--target", str(old.port), "--ready-file", str(ready), *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + 15
        while not ready.exists():
            assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
            time.sleep(0.02)
        info = json.loads(ready.read_text())
        r = Relay(proc, info["port"], info["control_port"], info["token"], log, [old])
        started.append(r)
        return r

    yield start
    try:
        for r in started:
            # The relay never crashes, and still serves a normal client after the test.
            assert r.proc.poll() is None, f"relay died: {r.log.read_text()}"
            headers = {"Authorization": f"Bearer {KEY}"}
            ok = requests.post(r.url + "/after", json={}, headers=headers, timeout=10)
            assert ok.status_code == 200, ok.text
    finally:
        for r in started:
            r.proc.terminate()
            r.proc.wait(10)
            for b in r.backends:
                b.close()

"""A retiring uvicorn server (drain.py) answers a kept-alive connection's next request, with
``Connection: close``, under both of uvicorn's HTTP/1.1 implementations (no MLflow)."""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from zenml_model_deployers.local import drain

SERVER = """
import sys, uvicorn
from zenml_model_deployers.local import drain

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await receive()
    start = {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    drain.close_after(start)
    await send(start)
    await send({"type": "http.response.body", "body": b"ok"})

drain.install()
uvicorn.run(app, host="127.0.0.1", port=0, http=sys.argv[1], log_level="info")
"""


def _serve(tmp_path: Path, impl: str) -> tuple[subprocess.Popen[bytes], int, Path]:
    log = tmp_path / f"{impl}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", SERVER, impl], stdout=out, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 60
    while not (m := re.search(r"http://127\.0\.0\.1:(\d+)", log.read_text())):
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    return proc, int(m.group(1)), log


@pytest.mark.parametrize("impl", ["httptools", "h11"])
def test_a_retiring_server_answers_the_next_request_then_closes(tmp_path: Path, impl: str) -> None:
    proc, port, log = _serve(tmp_path, impl)
    busy = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    idle = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for c in (busy, idle):
            c.request("GET", "/")
            r = c.getresponse()
            assert (r.status, r.read(), r.getheader("connection")) == (200, b"ok", None)
        t0 = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        time.sleep(0.3)  # uvicorn alone closed both idle connections by now
        busy.request("GET", "/")  # the same connection
        r = busy.getresponse()
        assert (r.status, r.read(), r.getheader("connection")) == (200, b"ok", "close")
        # It stopped accepting: a new connection is refused.
        with pytest.raises(OSError):
            fresh = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            fresh.request("GET", "/")
            fresh.getresponse()
        # The connection left idle is closed after the grace, and the server then exits.
        # (uvicorn re-raises the SIGTERM it handled once it has shut down.)
        assert proc.wait(timeout=10) in (0, -signal.SIGTERM)
        waited = time.monotonic() - t0
        assert drain.IDLE_GRACE <= waited < drain.IDLE_GRACE + 5, waited
        assert idle.sock is not None and idle.sock.recv(1) == b""
    finally:
        busy.close()
        idle.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert "Finished server process" in log.read_text()


def test_close_after_only_while_retiring_and_once() -> None:
    msg: dict[str, object] = {"type": "http.response.start", "status": 200, "headers": []}
    saved = drain._state["retiring"]
    try:
        drain._state["retiring"] = False
        drain.close_after(msg)
        assert msg["headers"] == []
        drain._state["retiring"] = True
        drain.close_after(msg)
        drain.close_after(msg)
        assert msg["headers"] == [(b"connection", b"close")]
        kept = {"headers": [(b"Connection", b"Close")]}
        drain.close_after(kept)
        assert kept["headers"] == [(b"Connection", b"Close")]
    finally:
        drain._state["retiring"] = saved

"""The stable-URL relay, against plain HTTP servers (fast, no model server needed)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from relay_support import StartRelay, read_all, read_response, start_relay

from zenml_model_deployers.local.launch import free_port
from zenml_model_deployers.local.relay_control import control_request

__all__ = ["start_relay"]  # the fixture, imported by name


def _server(answer: str) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802
            n = int(self.headers.get("Content-Length", 0))
            self.rfile.read(n)
            body = json.dumps({"answer": answer}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


Control = Callable[[dict[str, Any]], dict[str, Any]]


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[tuple[int, Control, ThreadingHTTPServer]]:
    old = _server("old")
    ready = tmp_path / "ready.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "zenml_model_deployers.local.relay",
            "--port",
            "0",
            "--target",
            str(old.server_address[1]),
            "--ready-file",
            str(ready),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not ready.exists():
            assert time.monotonic() < deadline and proc.poll() is None, "relay did not start"
            time.sleep(0.02)
        info = json.loads(ready.read_text())
        yield info["port"], partial(control_request, info["control_port"], info["token"]), old
    finally:
        proc.terminate()
        proc.wait(10)
        old.shutdown()


def test_switch_moves_kept_alive_clients_without_a_failed_request(
    relay: tuple[int, Control, ThreadingHTTPServer],
) -> None:
    port, control, old = relay
    new = _server("new")
    url = f"http://127.0.0.1:{port}/invocations"
    answers: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def loop() -> None:
        s = requests.Session()
        deadline = time.monotonic() + 20
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                answers.append(s.post(url, json={"x": 1}, timeout=5).json()["answer"])
            except requests.RequestException as e:
                failures.append(repr(e))

    clients = [threading.Thread(target=loop) for _ in range(4)]
    for t in clients:
        t.start()
    time.sleep(0.5)
    assert control({"cmd": "switch", "port": new.server_address[1]})["ok"]
    drained = control({"cmd": "drain", "port": old.server_address[1], "timeout": 5})
    assert drained["in_flight"] == 0
    old.shutdown()
    old.server_close()
    time.sleep(0.5)
    stop.set()
    for t in clients:
        t.join(30)
    new.shutdown()
    assert failures == []
    assert "old" in answers and answers[-1] == "new"
    assert answers.index("new") > 0


def test_relay_refuses_a_busy_port(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "zenml_model_deployers.local.relay",
                "--port",
                str(busy),
                "--ready-file",
                str(tmp_path / "r.json"),
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert proc.returncode == 3
    assert f"cannot listen on 127.0.0.1:{busy}" in proc.stdout


def test_free_port_is_bindable() -> None:
    p = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", p))


def test_handoff_steps_the_relay_out_and_back_in(start_relay: StartRelay, tmp_path: Path) -> None:
    """The direct data path's relay side: the listening socket is handed over (SCM_RIGHTS);
    out of the path, a kept-alive connection's next request carries `Connection: close` (the
    server ends it after its answer) and new connections wait in the backlog for whoever
    accepts on the socket; back in, the relay accepts again."""
    from zenml_model_deployers.flavors.mlflow.serve import inherit_listener

    handoff = tmp_path / "front.sock"
    relay = start_relay("--handoff", str(handoff))
    assert oct(handoff.stat().st_mode & 0o777) == "0o600"
    req = b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
    with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as kept:
        kept.sendall(req)
        assert read_response(kept)["answer"] == "old"
        listener = inherit_listener(str(handoff))
        with listener:
            assert listener.family == socket.AF_INET
            assert listener.getsockname()[1] == relay.port
            out = relay.control({"cmd": "accept", "on": False, "timeout": 0.2})
            assert out["accepting"] is False and out["left"] == 1  # kept: idle, closed after
            assert relay.control({"cmd": "status"})["accepting"] is False
            # A new connection is queued on the socket, not accepted by the relay.
            with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as queued:
                queued.sendall(req)
                listener.settimeout(5)
                conn, _ = listener.accept()
                with conn:
                    assert conn.recv(65536).startswith(b"POST /p")
            assert read_all(kept) == b""  # the idle one was closed at the deadline
            assert relay.control({"cmd": "accept", "on": True})["accepting"] is True
    with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as again:
        again.sendall(req)
        assert read_response(again)["answer"] == "old"


def test_a_stepping_out_relay_closes_kept_alive_connections_after_their_answer(
    start_relay: StartRelay, tmp_path: Path
) -> None:
    relay = start_relay("--handoff", str(tmp_path / "front.sock"))
    req = b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
    with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as kept:
        kept.sendall(req)
        assert read_response(kept)["answer"] == "old"
        stepping = threading.Thread(
            target=relay.control, args=({"cmd": "accept", "on": False, "timeout": 5},)
        )
        stepping.start()
        time.sleep(0.2)
        kept.sendall(req)  # its next request: answered, then the server closes the connection
        t0 = time.monotonic()
        answer = read_all(kept)
        assert time.monotonic() - t0 < 2, "the connection stayed open"
        stepping.join(10)
    assert b'"answer": "old"' in answer
    assert relay.control({"cmd": "status"})["connections"] == {}
    assert relay.control({"cmd": "accept", "on": True})["accepting"] is True

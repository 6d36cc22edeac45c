"""The gate of a `zmd-mlflow` server (``local/gate.py``): a wake makes its watcher look
at the gate file at once, not at its next poll, and never reaches a process that does not
catch it. The whole path (real servers) is in test_mlflow_default_path.py."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from zenml_model_deployers.flavors.mlflow.service import MLflowDeploymentService
from zenml_model_deployers.local import gate


def _front(path: Path, listener: socket.socket) -> threading.Thread:
    """A front's handoff socket: hands ``listener`` to each process that connects."""
    hs = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    hs.bind(str(path))
    hs.listen(4)
    hs.settimeout(20)

    def serve() -> None:
        with hs:
            for _ in range(2):
                try:
                    c, _ = hs.accept()
                except OSError:
                    return
                with c:
                    socket.send_fds(c, [b"L"], [listener.fileno()])

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return t


def test_a_woken_gate_opens_and_closes_without_waiting_for_its_poll(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gate, "POLL", 30.0)  # only the wake can make it look in time
    listener = socket.create_server(("127.0.0.1", 0))
    handoff, gate_file = tmp_path / "h.sock", tmp_path / "server.gate"
    _front(handoff, listener)
    server: Any = SimpleNamespace(
        should_exit=False,
        servers=[],
        config=SimpleNamespace(backlog=16, http_protocol_class=None),
        server_state=None,
        lifespan=SimpleNamespace(state={}),
    )
    previous = signal.getsignal(gate.WAKE_SIGNAL)

    async def until(check: Any, timeout: float) -> float:
        t0 = time.monotonic()
        while not check():
            assert time.monotonic() - t0 < timeout, "the woken worker did not look at its gate"
            await asyncio.sleep(0.005)
        return time.monotonic() - t0

    async def scenario() -> tuple[float, float]:
        task = asyncio.get_running_loop().create_task(
            gate._watch(server, str(gate_file), str(handoff))
        )
        await asyncio.sleep(0.2)  # its first look is done: it waits for POLL or a wake
        assert signal.getsignal(gate.WAKE_SIGNAL) not in (signal.SIG_DFL, signal.SIG_IGN, None)
        gate_file.touch()
        signal.raise_signal(gate.WAKE_SIGNAL)
        opened = await until(lambda: len(server.servers) == 1, 5.0)
        gate_file.unlink()
        signal.raise_signal(gate.WAKE_SIGNAL)
        closed = await until(lambda: not server.servers and gate.closed(), 5.0)
        server.should_exit = True
        signal.raise_signal(gate.WAKE_SIGNAL)
        await asyncio.wait_for(task, 5.0)
        return opened, closed

    try:
        opened, closed = asyncio.run(scenario())
    finally:
        signal.signal(gate.WAKE_SIGNAL, previous)
        listener.close()
    assert opened < 5.0 and closed < 5.0  # not POLL's 30 s


def test_wake_signals_only_the_processes_that_catch_it(tmp_path: Path) -> None:
    flag = tmp_path / "woken"
    catcher = (
        "import signal, sys, time\n"
        f"signal.signal(signal.SIGUSR1, lambda *a: open({str(flag)!r}, 'w').close())\n"
        "print('ready', flush=True)\n"
        "time.sleep(30)\n"
    )
    plain = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    caught = subprocess.Popen([sys.executable, "-c", catcher], stdout=subprocess.PIPE, text=True)
    try:
        assert caught.stdout is not None and caught.stdout.readline().strip() == "ready"
        time.sleep(0.2)  # the plain one runs: its SIGUSR1 would end it
        assert gate.wake(plain.pid) == 0
        assert gate.wake(caught.pid) == 1
        deadline = time.monotonic() + 10
        while not flag.exists():
            assert time.monotonic() < deadline, "the catching process was not woken"
            time.sleep(0.01)
        time.sleep(0.2)
        assert plain.poll() is None and caught.poll() is None
    finally:
        for p in (plain, caught):
            p.kill()
            p.wait(10)


def test_gate_events_count_only_what_the_log_got_after_the_offset(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text(f"{gate.OPENED} (pid 1)\n{gate.CLOSED} (pid 1)\n")
    since = log.stat().st_size
    with log.open("a") as f:
        f.write('INFO: "POST /invocations HTTP/1.1" 200 OK\n' + f"{gate.OPENED} (pid 1)\n")
    events = MLflowDeploymentService.gate_events
    assert events(None, log) == (2, 1)  # type: ignore[arg-type]
    assert events(None, log, since) == (1, 0)  # type: ignore[arg-type]

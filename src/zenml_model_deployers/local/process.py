"""Server processes: spawn directly (no daemon double-fork), identify by pid + start time."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil
from pydantic import BaseModel

from zenml_model_deployers.local.state import live_process, tail


class ProcessHandle(BaseModel):
    """Identity of a process that survives pid reuse: pid plus the process's start time."""

    pid: int
    create_time: float

    def process(self) -> psutil.Process | None:
        """The live process, or None if it exited (or the pid now names another process).

        Returns:
            The psutil process or None.
        """
        return live_process(self.model_dump())

    def is_alive(self) -> bool:
        """Tells whether the process still runs.

        Returns:
            True if it runs.
        """
        return self.process() is not None

    def terminate(self, timeout: float = 10.0) -> None:
        """Stops the process and its children: SIGTERM, then SIGKILL after `timeout`.

        Idempotent: a process that already exited is fine.

        Args:
            timeout: seconds to wait for a graceful exit.
        """
        proc = self.process()
        if proc is None:
            return
        try:
            children = proc.children(recursive=True)
        except psutil.Error:
            children = []
        terminate_all([proc, *children], timeout)


def terminate_all(procs: list[psutil.Process], timeout: float = 10.0) -> None:
    """SIGTERM to every process, SIGKILL to those still alive after `timeout`; waits for both.

    Args:
        procs: the processes (gone ones are fine).
        timeout: grace period in seconds.
    """
    for p in procs:
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.Error:
            pass
    alive = _wait_gone(procs, timeout)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    _wait_gone(alive, 5)


def _gone(p: psutil.Process) -> bool:
    try:
        return not p.is_running() or p.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Waits until the processes exited (a zombie counts as exited); returns those still alive.

    Polls every 20 ms: ``psutil.wait_procs`` backs off and reported exits up to a second late.
    """
    deadline = time.monotonic() + timeout
    alive = list(procs)
    while alive:
        reap_children()
        alive = [p for p in alive if not _gone(p)]
        if not alive or time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    return alive


def spawn(
    command: Sequence[str],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> ProcessHandle:
    """Starts a process detached from the caller's session, output appended to a log file.

    The child gets its own session so it outlives the pipeline step that started it and
    does not keep the caller's terminal or pipes open.

    Args:
        command: argv.
        log_path: file that receives stdout and stderr.
        env: full environment of the child (default: the caller's).
        cwd: working directory.

    Returns:
        The child's handle.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        popen = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=str(cwd) if cwd else None,
            start_new_session=True,
            close_fds=True,
        )
    # The child is never wait()ed by us if we exit first; it is reparented to init.
    # When we are still alive while it exits, reap it to avoid a zombie showing as alive.
    _reap_later(popen)
    return ProcessHandle(pid=popen.pid, create_time=psutil.Process(popen.pid).create_time())


_children: list[subprocess.Popen[bytes]] = []


def _reap_later(popen: subprocess.Popen[bytes]) -> None:
    _children.append(popen)
    for child in list(_children):
        if child.poll() is not None:
            _children.remove(child)


def reap_children() -> None:
    """Collects exit statuses of children spawned by this process that have exited."""
    for child in list(_children):
        if child.poll() is not None:
            _children.remove(child)


def failure_excerpt(path: Path, lines: int = 25) -> str:
    """The log's last lines, preceded by its last error lines if those scrolled out of them.

    Servers often end with a generic "exited with code 1" after the real cause (a model that
    does not exist, an import error); users need the real cause first.

    Args:
        path: the log file.
        lines: how many trailing lines.

    Returns:
        Text.
    """
    last = tail(path, lines)
    whole = tail(path, 4000, max_bytes=2_000_000)
    errors = [
        ln
        for ln in whole.splitlines()
        if ("Error" in ln or "Exception" in ln or "No such" in ln)
        and not ln.startswith((" ", "\t"))
    ]
    missing = [ln for ln in errors[-5:] if ln not in last]
    if missing:
        return "\n".join(missing) + "\n...\n" + last
    return last


def python_executable() -> str:
    """The interpreter of the current environment (servers run from it).

    Returns:
        A path.
    """
    import sys

    return sys.executable


def env_with_venv_path(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The caller's environment with this interpreter's bin dir first on PATH.

    `mlflow models serve` execs `uvicorn` by name, so the venv's bin must be on PATH even
    when the user did not activate the venv.

    Args:
        extra: variables to add or override.

    Returns:
        An environment dict.
    """
    env = dict(os.environ)
    bindir = str(Path(python_executable()).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    if extra:
        env.update(extra)
    return env

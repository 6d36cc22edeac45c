"""Server processes: spawn directly (no daemon double-fork), identify by pid + start time."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil
from pydantic import BaseModel

from zenml_model_deployers.local.state import env_with_venv_path as env_with_venv_path
from zenml_model_deployers.local.state import group_leftovers, live_process, spawn_logged, tail
from zenml_model_deployers.local.state import python_executable as python_executable


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
        """Stops the process and its descendants: SIGTERM, then SIGKILL after `timeout`.

        Descendants are its children and whatever else is still in its process group (it was
        started in its own session), so those that outlived it (reparented to init after a
        ``kill -9``, e.g. vLLM's EngineCore) end too. Idempotent: a process that already
        exited is fine.

        Args:
            timeout: seconds to wait for a graceful exit.
        """
        proc = self.process()
        children: list[psutil.Process] = []
        if proc is not None:
            try:
                children = proc.children(recursive=True)
            except psutil.Error:
                children = []
        known = {p.pid for p in children}
        rest = [p for p in group_leftovers(self.model_dump()) if p.pid not in known]
        procs = [proc, *children, *rest] if proc is not None else [*children, *rest]
        if procs:
            terminate_all(procs, timeout)


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
    """Starts a process as :func:`state.spawn_logged` does (its own session, output appended
    to a private log) and returns its handle.

    Args:
        command: argv.
        log_path: file that receives stdout and stderr.
        env: the child's environment (default: the caller's).
        cwd: working directory.

    Returns:
        The child's handle.
    """
    return adopt(spawn_logged(command, log_path, env, cwd))


def adopt(popen: subprocess.Popen[bytes]) -> ProcessHandle:
    """The handle of a child started by :func:`state.spawn_logged`; it is reaped by this process
    while it lives (a zombie would show as alive).

    Args:
        popen: the child.

    Returns:
        Its handle.
    """
    # Read the start time first: a child that exits at once (a server that fails on start) is
    # still a zombie now, and would be gone once reaped.
    handle = ProcessHandle(pid=popen.pid, create_time=psutil.Process(popen.pid).create_time())
    # The child is never wait()ed by us if we exit first; it is reparented to init.
    _reap_later(popen)
    return handle


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


# A Python exception line at column 0: `pkg.module.SomeError: message` (or a bare name).
_EXC_LINE = re.compile(
    r"^(?:[A-Za-z_]\w*\.)*([A-Za-z_]\w*(?:Error|Exception|Exit|NotFound)\w*)(?::\s?(.*))?$"
)
# Wrappers that only say that a child failed; the child's own exception is the cause.
_GENERIC = ("returned non zero return code", "returned non-zero exit status", "exited with code")
_NOT_DETAIL = (" ", "\t", "Traceback", "During handling", "The above exception", "[", "INFO")


def failure_cause(path: Path, generic: Sequence[str] = ()) -> str:
    """The backend's one-line error from a log: its last exception, in its own words.

    Wrappers that only report a child's exit ("returned non zero return code") yield to the
    child's exception; a message that ends with ``:`` and lists its details (MLflow's
    "The following failures occurred ...:" then "No such artifact: 'x'") gives the last
    detail instead.

    Args:
        path: the log file.
        generic: further wrapper messages (a backend's own) that yield to the real cause.

    Returns:
        ``ExceptionName: message``, or "" when the log shows no exception.
    """
    return failure_cause_in(tail(path, 4000, max_bytes=2_000_000).splitlines(), generic)


def failure_cause_in(lines: Sequence[str], generic: Sequence[str] = ()) -> str:
    """:func:`failure_cause` for log lines already read (e.g. stripped of a prefix).

    Args:
        lines: the log's lines.
        generic: further wrapper messages that yield to the real cause.

    Returns:
        ``ExceptionName: message``, or "".
    """
    wrappers = (*_GENERIC, *generic)
    best = ""
    for i, line in enumerate(lines):
        m = _EXC_LINE.match(line)
        if not m:
            continue
        name, msg = m.group(1), (m.group(2) or "").strip()
        detail = []
        for nxt in lines[i + 1 : i + 20]:
            if not nxt.strip() or nxt.startswith(_NOT_DETAIL) or nxt[:1].isdigit():
                break
            if _EXC_LINE.match(nxt):
                break
            if not set(nxt.strip()) <= set("#=-* ") and not nxt.startswith("#"):
                detail.append(nxt.strip())
        if msg.endswith(":") and detail:
            msg = detail[-1]
        if best and any(g in msg for g in wrappers):
            continue
        best = f"{name}: {msg}" if msg else name
    if not best:
        # CLIs built on click report as `Error: message`.
        errors = [ln[len("Error: ") :] for ln in lines if ln.startswith("Error: ")]
        best = errors[-1] if errors else ""
    return best[:500]


def keep_failed_log(log: Path, keep: int = 5) -> Path:
    """Moves a failed revision's log to ``failed/`` beside it, keeping the newest `keep` there.

    The deployment's own files may be removed after a failure (nothing half-made is left);
    this one stays so that the path an error message names exists.

    Args:
        log: the failed server's log.
        keep: how many failed logs this deployment keeps.

    Returns:
        The log's new path (its old one if it could not be moved).
    """
    dest_dir = log.parent / "failed"
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
        dest = dest_dir / log.name
        os.replace(log, dest)
    except OSError:
        return log
    kept = sorted(dest_dir.glob("*.log"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in kept[keep:]:
        old.unlink(missing_ok=True)
    return dest

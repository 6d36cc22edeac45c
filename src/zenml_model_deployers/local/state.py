"""What a local deployment's processes say, read cheaply: liveness (pid + start time), the
front's supervision record, the state and message users see, and the server's log.

Standard library and psutil only: the CLI's fast paths (``fastlist.py``) and the relay's
supervisor import it without pydantic or ZenML; ``LocalProcessService`` uses the same functions,
so both paths always say the same.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil

SPEC_FILE = "supervise.json"
STATE_FILE = "supervisor.json"


def live_process(ident: Mapping[str, Any] | None) -> psutil.Process | None:
    """The live process behind an identity, or None (gone, zombie, or the pid now names
    another process).

    Args:
        ident: ``{"pid", "create_time"}`` (a ``ProcessHandle`` dumped), or None.

    Returns:
        The psutil process or None.
    """
    if not ident:
        return None
    try:
        p = psutil.Process(int(ident["pid"]))
        if abs(p.create_time() - float(ident["create_time"])) > 0.01:
            return None
        if p.status() == psutil.STATUS_ZOMBIE:
            return None
        return p
    except (psutil.Error, KeyError, ValueError, TypeError):
        return None


def group_leftovers(ident: Mapping[str, Any] | None) -> list[psutil.Process]:
    """The processes left in the process group of a server started in its own session
    (``start_new_session``: the group's id is the server's pid), the server itself excluded.

    They are its descendants, found also once they were reparented to init because the
    server died first: vLLM's EngineCore and workers outlive a ``kill -9`` of its API server,
    and ``children()`` no longer reaches them then. Nothing is returned when the pid now names
    another process (reused): its group is not ours.

    Args:
        ident: the server's ``{"pid", "create_time"}``, or None.

    Returns:
        The processes to end (empty for a server without descendants).
    """
    if not ident:
        return []
    try:
        pgid, born = int(ident["pid"]), float(ident["create_time"])
    except (KeyError, ValueError, TypeError):
        return []
    try:
        if abs(psutil.Process(pgid).create_time() - born) > 0.01:
            return []  # the pid names a newer process
    except psutil.Error:
        pass  # the server is gone: whatever is still in its group is what it left
    found = []
    for p in psutil.process_iter(["create_time"]):
        try:
            if p.pid != pgid and os.getpgid(p.pid) == pgid and p.info["create_time"] >= born - 0.01:
                found.append(p)
        except (psutil.Error, OSError):
            continue
    return found


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def same_process(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    if not a or not b:
        return False
    return bool(
        a.get("pid") == b.get("pid")
        and abs(float(a.get("create_time", 0)) - float(b.get("create_time", -1))) <= 0.01
    )


def supervision_of(server: dict[str, Any] | None, workdir: Path) -> dict[str, Any] | None:
    """The supervisor's record for a deployment whose recorded server is ``server``.

    It applies when the supervisor watches that server's revision: the server itself, or one
    it started after that server (or one it started before) died. A record about another revision (an older front
    that is gone, a deploy that was interrupted) does not apply.

    Args:
        server: the recorded server's identity (``{"pid", "create_time"}``), or None.
        workdir: the deployment's directory.

    Returns:
        ``{"server", "origin", "restarts", "state", "message", ...}`` or None.
    """
    if server is None:
        return None
    state = read_json(workdir / STATE_FILE)
    if state is None:
        return None
    known = [state.get("origin"), state.get("server"), *(state.get("lineage") or [])]
    if any(same_process(ident, server) for ident in known):
        return state
    return None


def process_state(
    server: Mapping[str, Any] | None,
    relay: Mapping[str, Any] | None,
    supervision: Mapping[str, Any] | None = None,
) -> tuple[str, str]:
    """The state of a local deployment from its processes' liveness (no HTTP: cheap).

    Args:
        server: the serving revision's process identity (None: stopped on purpose).
        relay: the front's process identity.
        supervision: the front's supervisor record for this revision (``supervisor.json``),
            if any: a server it restarted replaces ``server``; it may be restarting or failed.

    Returns:
        ("active" | "inactive" | "pending_startup" | "error", message): a ZenML ServiceState
        value and why.
    """
    relay_ok = live_process(relay) is not None
    if supervision and supervision.get("server"):
        server = supervision["server"]
    server_ok = live_process(server) is not None
    if relay_ok and server_ok:
        return "active", ""
    if not relay_ok and not server_ok and server is None:
        return "inactive", ""
    sup = supervision or {}
    if relay_ok and sup.get("state") == "restarting":
        return "pending_startup", str(sup.get("message", ""))
    if sup.get("state") == "failed":
        return "error", str(sup.get("message", ""))
    missing = [n for n, ok in (("server", server_ok), ("front (relay)", relay_ok)) if not ok]
    return "error", f"{' and '.join(missing)} process not running"


def local_state(
    deployment_name: str,
    server: Mapping[str, Any] | None,
    relay: Mapping[str, Any] | None,
    supervision: Mapping[str, Any] | None = None,
) -> tuple[str, str]:
    """A local deployment's state and the message users see (``check_status`` and the CLI's
    fast paths both use it, so they always say the same).

    Args:
        deployment_name: the deployment's name.
        server: the recorded server.
        relay: the recorded front.
        supervision: the front's supervisor record, if it applies.

    Returns:
        (ServiceState value, message).
    """
    state, message = process_state(server, relay, supervision)
    if state == "error":
        message += f"; `zmd models start {deployment_name}` brings it back on the same URL"
    return state, message


def log_lines(
    path: Path,
    tail_lines: int | None,
    follow: bool,
    running: Callable[[], bool],
    redact: Callable[[str], str],
) -> Generator[str, bool, None]:
    """Yields a server log's lines (all, or the last ``tail_lines``), then, with ``follow``,
    new lines while ``running()`` says the server runs.

    Args:
        path: the log file (missing: nothing).
        tail_lines: only the last N lines.
        follow: keep yielding new lines.
        running: tells whether the server still runs.
        redact: applied to every line.

    Yields:
        Lines.
    """
    if not path.exists():
        return
    text = (
        tail(path, tail_lines, max_bytes=1 << 30)
        if tail_lines
        else path.read_text(errors="replace")
    )
    for line in text.splitlines():
        yield redact(line)
    if not follow:
        return
    with open(path, errors="replace") as f:
        f.seek(0, os.SEEK_END)
        while True:
            line = f.readline()
            if line:
                yield redact(line.rstrip("\n"))
            elif not running():
                return
            else:
                time.sleep(0.2)


def tail(path: Path, lines: int = 30, max_bytes: int = 64_000) -> str:
    """The last lines of a log file (empty if it does not exist).

    Args:
        path: the log file.
        lines: how many lines.
        max_bytes: read at most this much from the end.

    Returns:
        Text.
    """
    try:
        size = path.stat().st_size
    except OSError:
        return ""
    with open(path, "rb") as f:
        f.seek(max(0, size - max_bytes))
        data = f.read().decode("utf-8", errors="replace")
    return "\n".join(data.splitlines()[-lines:])


def spawn_logged(
    command: Sequence[str],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Starts a process detached from the caller's session, output appended to a log file (the
    start of ``process.spawn``, which wraps the child in a handle; the CLI's fast start calls it
    before it imports what a handle needs).

    The child gets its own session so it outlives the pipeline step that started it and does
    not keep the caller's terminal or pipes open. The log and whatever the child writes are
    private to the user (log 0600, the child's umask 077): logs can hold request data.

    Args:
        command: argv.
        log_path: file that receives stdout and stderr.
        env: full environment of the child (default: the caller's).
        cwd: working directory.

    Returns:
        The child.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(fd, 0o600)
    with open(fd, "ab") as log:
        return subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=str(cwd) if cwd else None,
            start_new_session=True,
            close_fds=True,
            umask=0o077,
        )


def orphans(
    workdir: Path, known: list[Mapping[str, Any] | None], python: str
) -> list[psutil.Process]:
    """Processes of a deployment that no record knows (a deploy killed midway): started in its
    directory by ``python`` (servers run there, the relay names its ready file there).

    Args:
        workdir: the deployment's directory.
        known: the recorded processes' identities (they and their children are left alone).
        python: the interpreter servers and fronts run with.

    Returns:
        The processes to end (callers hold the deployment's lock).
    """
    mine = {os.getpid()}
    for ident in known:
        live = live_process(ident)
        if live is not None:  # a recorded process and its children (uvicorn under mlflow)
            mine.add(live.pid)
            with contextlib.suppress(psutil.Error):
                mine.update(c.pid for c in live.children(recursive=True))
    marker = str(workdir)
    out = []
    for p in psutil.process_iter(["pid", "cmdline", "cwd"]):
        try:
            if p.pid in mine:
                continue
            argv = p.info["cmdline"] or []
            if not argv or argv[0] != python:  # only processes our interpreter runs
                continue
            if p.info["cwd"] == marker or f"{marker}/relay.json" in " ".join(argv):
                out.append(p)
        except psutil.Error:
            continue
    return out


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

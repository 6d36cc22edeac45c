"""Supervision of a local deployment's server, run inside the deployment's front (the relay).

The relay owns the deployment's URL and outlives every revision, so it is the one process that
can notice a server dying (OOM, crash, ``kill -9``) and bring it back with nobody around:

- the dead server's leftover children are ended, then the server is started again with the
  same command, environment and private port, so the relay's target does not change and the
  URL answers again as soon as the new process is healthy;
- the supervisor wakes the moment the server exits (a pidfd in the relay's event loop; a
  0.2 s poll where the platform has none), and the first restart of a crash episode starts at
  once; only repeated crashes wait, with bounded exponential backoff (``backoff_initial *
  2**(n-2)`` before the n-th restart in a row, at most ``backoff_max`` seconds); a server that
  then stays up for ``stable_after`` seconds ends the episode;
- after ``max_restarts`` failed restarts in a row the revision is marked *failed*, with the
  last lines of its log, and no further restart is tried (``zmd models start`` tries again).

Two files in the deployment's directory connect the supervisor with the processes that deploy:

- ``supervise.json`` (mode 0600), written by the process that started the serving revision,
  once that revision was ready: argv, the environment the server needs (runtime variables, the
  configured env and what the flavor sets: ``LocalProcessService.restart_env``; not the
  deploying process's other variables) *without the variables that hold a resolved secret*,
  which it only names (``secret_env``), working directory, private port, the server's
  identity (pid + start time), the health request and the restart policy. A new identity in
  it means a new revision (update, start): the supervisor adopts it and its count starts over.
  The secret variables' values (and the values to scrub from log tails) come over the
  authenticated control channel (the ``secrets`` command, :meth:`Supervisor.remember`, sent
  before the spec is written) and stay in this process's memory only. A front started again
  gets them from the command that started it; until they came, a crashed server that needs
  them waits (bounded), then the revision is marked failed with the fix
  (``zmd models start``).
- ``supervisor.json``, written by the supervisor (no secrets): the server serving now, the
  revision's restart count, ``running`` / ``restarting`` / ``failed`` and a message (the log
  tail, secrets scrubbed, when failed). ``LocalProcessService`` and the CLI's fast paths read
  it through :func:`supervision_of`.

Only the standard library and psutil are imported here: the relay must start quickly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from zenml_model_deployers.local.state import (
    STATE_FILE,
    group_leftovers,
    live_process,
    read_json,
    same_process,
)

POLL_INTERVAL = 0.2  # spec changes (a new revision), and liveness where there is no pidfd
_READY_POLL = 0.05
_CHILDREN_REFRESH = 5.0
_HEALTH_TIMEOUT = 2.0
_LINEAGE_MAX = 1000
_SECRETS_KEPT = 4  # servers whose secrets are kept: the serving one, a canary, the next one
SECRETS_WAIT = 60.0  # seconds a restart waits for secrets a front started again lacks


def write_spec(path: Path, spec: dict[str, Any]) -> None:
    """Writes the supervision spec atomically, readable by its owner only (it holds secrets).

    Args:
        path: ``<deployment dir>/supervise.json``.
        spec: see the module docstring.
    """
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(spec, f)
    os.replace(tmp, path)


def _identity(pid: int) -> dict[str, Any]:
    import psutil

    return {"pid": pid, "create_time": psutil.Process(pid).create_time()}


def _key(ident: Any) -> tuple[int, float] | None:
    try:
        return int(ident["pid"]), round(float(ident["create_time"]), 2)
    except (TypeError, KeyError, ValueError):
        return None


def _tail(path: str | None, lines: int = 25) -> str:
    if not path:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64_000))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _pidfd(ident: dict[str, Any] | None) -> int | None:
    """A pidfd for the process behind ``ident`` (readable once it exited), or None where the
    platform has none or the pid now names another process (then the poll notices)."""
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None or not ident:
        return None
    try:
        fd = int(pidfd_open(int(ident["pid"])))
    except (OSError, KeyError, ValueError, TypeError):
        return None
    # Checked after opening: a pidfd names one process, so a pid reused before the open shows
    # up here, and one reused after it cannot.
    if live_process(ident) is None:
        os.close(fd)
        return None
    return fd


class Supervisor:
    """Watches the serving revision's server and restarts it when it dies (see module)."""

    def __init__(self, spec_path: Path) -> None:
        """Creates the supervisor (nothing runs until :meth:`run`).

        Args:
            spec_path: the deployment's ``supervise.json``.
        """
        self.spec_path = spec_path
        self.state_path = spec_path.with_name(STATE_FILE)
        self.spec: dict[str, Any] = {}
        self._spec_stamp: int | None = None
        self.origin: dict[str, Any] | None = None
        self.watched: dict[str, Any] | None = None
        self.lineage: list[dict[str, Any]] = []  # servers it started for this revision
        self.children: list[dict[str, Any]] = []
        self._children_at = 0.0
        self.restarts = 0
        self.crashes_in_row = 0
        self.up_since = time.monotonic()
        self.state = "idle"
        self.message = ""
        self._starting: subprocess.Popen[bytes] | None = None
        self._spawned: list[subprocess.Popen[bytes]] = []
        self._fd: int | None = None  # pidfd of the watched server
        self._fd_ident: dict[str, Any] | None = None
        self._wake: asyncio.Event | None = None
        # Per server identity (pid, start time): the secret variables and values to scrub.
        self._secrets: dict[tuple[int, float], dict[str, Any]] = {}

    # ----------------------------------------------------------------- secrets, in memory only
    def remember(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Keeps the secrets of a server's environment in memory (the ``secrets`` command).

        Args:
            msg: ``{"server": identity, "env": {name: value}, "redact": [values]}``.

        Returns:
            The reply.

        Raises:
            ValueError: the command names no server.
        """
        key = _key(msg.get("server"))
        if key is None:
            raise ValueError("secrets: no server identity")
        env = {str(k): str(v) for k, v in dict(msg.get("env") or {}).items()}
        redact = [str(v) for v in msg.get("redact") or [] if v]
        self._secrets.pop(key, None)
        self._secrets[key] = {"env": env, "redact": redact}
        while len(self._secrets) > _SECRETS_KEPT:
            del self._secrets[next(iter(self._secrets))]
        return {"ok": True}

    def _secrets_of_origin(self) -> dict[str, Any] | None:
        key = _key(self.origin)
        return self._secrets.get(key) if key is not None else None

    def _missing_secrets(self) -> list[str]:
        """The secret variables the revision's server needs and this front does not have."""
        needed = [str(k) for k in self.spec.get("secret_env") or []]
        have = (self._secrets_of_origin() or {}).get("env") or {}
        return [k for k in needed if k not in have]

    # ----------------------------------------------------------------- policy
    def _policy(self, key: str, default: float) -> float:
        try:
            return float(self.spec.get(key, default))
        except (TypeError, ValueError):
            return default

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before restart number ``attempt`` of a crash episode (1-based).

        Args:
            attempt: 1 for the first restart after a crash.

        Returns:
            0 for the first (a single crash is restarted at once), then
            ``min(backoff_max, backoff_initial * 2**(attempt-2))``.
        """
        if attempt <= 1:
            return 0.0
        initial = self._policy("backoff_initial", 0.5)
        return float(min(self._policy("backoff_max", 8.0), initial * 2 ** (attempt - 2)))

    # ----------------------------------------------------------------- files
    def _stamp(self) -> int | None:
        try:
            return self.spec_path.stat().st_mtime_ns
        except OSError:
            return None

    def _spec_changed(self) -> bool:
        return self._stamp() != self._spec_stamp

    def _load_spec(self, initial: bool = False) -> bool:
        """Adopts a new revision named by the spec; True if one was adopted."""
        stamp = self._stamp()
        if stamp == self._spec_stamp:
            return False
        spec = read_json(self.spec_path)
        self._spec_stamp = stamp
        if spec is None:
            return False
        self.spec = spec
        origin = spec.get("server")
        if same_process(origin, self.origin):
            return False
        self.origin = origin
        # A revision recorded while this front runs is watched even if it died already (before
        # the first look): that is a crash. A front starting up watches only a live server.
        self.watched = origin if not initial or live_process(origin) is not None else None
        self.restarts = 0
        self.lineage = []
        self.message = ""
        if initial:
            # A front started again (after its own crash) continues its predecessor's record.
            prev = read_json(self.state_path)
            if prev and same_process(prev.get("origin"), origin):
                self.restarts = int(prev.get("restarts", 0))
                self.lineage = list(prev.get("lineage") or [])
                if live_process(prev.get("server")) is not None:
                    self.watched = prev.get("server")
        self.crashes_in_row = 0
        self.up_since = time.monotonic()
        self.state = "running" if self.watched is not None else "idle"
        self._refresh_children(force=True)
        self._write_state()
        return True

    def _write_state(self) -> None:
        data = {
            "origin": self.origin,
            "server": self.watched,
            "port": self.spec.get("port"),
            "config_hash": self.spec.get("config_hash", ""),
            "log_path": self.spec.get("log_path"),
            "restarts": self.restarts,
            "lineage": self.lineage[-_LINEAGE_MAX:],
            "state": self.state,
            "message": self.message,
            "updated": time.time(),
            "supervisor_pid": os.getpid(),
        }
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(data))
            os.replace(tmp, self.state_path)
        except OSError:
            pass  # the deployment's directory was removed (delete): the front ends soon

    # ----------------------------------------------------------------- processes
    def _refresh_children(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._children_at < _CHILDREN_REFRESH:
            return
        self._children_at = now
        p = live_process(self.watched)
        if p is None:
            return
        import psutil

        try:
            self.children = [
                {"pid": c.pid, "create_time": c.create_time()} for c in p.children(recursive=True)
            ]
        except psutil.Error:
            pass

    def _end_leftovers(self) -> None:
        """Ends the dead server's children (e.g. uvicorn workers holding the private port),
        also those not seen yet that are still in its process group (vLLM's EngineCore)."""
        leftovers = [live_process(ident) for ident in self.children]
        leftovers += group_leftovers(self.watched)
        for p in leftovers:
            if p is not None:
                with contextlib.suppress(Exception):
                    p.kill()
        self.children = []

    def _reap(self) -> None:
        for p in list(self._spawned):
            if p.poll() is not None:
                self._spawned.remove(p)

    async def _end(self, popen: subprocess.Popen[bytes], grace: float = 5.0) -> None:
        ident = None
        with contextlib.suppress(Exception):
            ident = _identity(popen.pid)
        kids: list[Any] = []
        p = live_process(ident)
        if p is not None:
            with contextlib.suppress(Exception):
                kids = p.children(recursive=True)
        kids += [k for k in group_leftovers(ident) if k.pid not in {c.pid for c in kids}]
        with contextlib.suppress(OSError):
            popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while popen.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for k in [popen, *kids]:
            with contextlib.suppress(Exception):
                k.kill()
        with contextlib.suppress(Exception):
            popen.wait(timeout=5)

    async def _healthy(self, port: int) -> bool:
        method = str(self.spec.get("health_method", "GET"))
        path = str(self.spec.get("health_path", "/ping"))
        try:
            reader, writer = await asyncio.wait_for(
                # A direct-data-path server answers on the front's host and public port.
                asyncio.open_connection(str(self.spec.get("health_host", "127.0.0.1")), port),
                _HEALTH_TIMEOUT,
            )
        except (OSError, TimeoutError):
            return False
        try:
            writer.write(f"{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), _HEALTH_TIMEOUT)
        except (OSError, TimeoutError):
            return False
        finally:
            writer.close()
        parts = line.split()
        return len(parts) >= 2 and parts[1].startswith(b"2")

    def _env(self) -> dict[str, str]:
        env = dict(self.spec.get("env") or os.environ)
        env.update((self._secrets_of_origin() or {}).get("env") or {})
        return env

    async def _await_secrets(self) -> bool | None:
        """Waits (bounded) for secrets a front started again does not have yet; True once they
        are here, None when a new revision was recorded meanwhile."""
        deadline = time.monotonic() + SECRETS_WAIT
        while self._missing_secrets():
            if self._spec_changed():
                return None
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(POLL_INTERVAL)
        return True

    async def _start_one(self) -> bool | None:
        """Starts the server once; True when healthy, False when it failed, None when a new
        revision was recorded meanwhile (the half-started server is ended)."""
        log_path = self.spec.get("log_path") or str(self.spec_path.with_name("server.log"))
        port = int(self.spec["port"])
        with open(log_path, "ab") as log:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            log.write(f"--- zmd: restart {self.restarts + 1} at {stamp} ---\n".encode())
            log.flush()
            popen = subprocess.Popen(
                list(self.spec["argv"]),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env(),
                cwd=self.spec.get("cwd") or None,
                start_new_session=True,
                close_fds=True,
            )
        self._spawned.append(popen)
        self._starting = popen
        self.restarts += 1
        born = None
        with contextlib.suppress(Exception):
            born = _identity(popen.pid)
        deadline = time.monotonic() + self._policy("ready_timeout", 300.0)
        try:
            while True:
                if popen.poll() is not None:
                    # What it started before it failed must not hold memory or the port.
                    for k in group_leftovers(born):
                        with contextlib.suppress(Exception):
                            k.kill()
                    return False
                if self._spec_changed():
                    await self._end(popen)
                    return None
                if await self._healthy(port):
                    break
                if time.monotonic() > deadline:
                    await self._end(popen)
                    return False
                await asyncio.sleep(_READY_POLL)
            self.watched = _identity(popen.pid)
            self.lineage.append(self.watched)
        finally:
            self._starting = None
        self._refresh_children(force=True)
        return True

    # ----------------------------------------------------------------- the loop
    async def _heal(self) -> None:
        """The watched server died: restart it with backoff, or mark the revision failed."""
        self._end_leftovers()
        self.watched = None
        self.crashes_in_row += 1
        limit = int(self._policy("max_restarts", 5))
        while True:
            if self.crashes_in_row > limit:
                self._fail(limit)
                return
            missing = self._missing_secrets()
            if missing:
                self.state = "restarting"
                self.message = (
                    f"the server exited; its secret variables ({', '.join(missing)}) are not "
                    "known to this front (it was started again): waiting for `zmd models start`"
                )
                self._write_state()
                got = await self._await_secrets()
                if got is None:
                    return
                if not got:
                    self._fail_without_secrets(missing)
                    return
            delay = self.backoff(self.crashes_in_row)
            self.state = "restarting"
            self.message = (
                f"the server exited; restart {self.restarts + 1} in {delay:.1f} s "
                f"({self.crashes_in_row} of at most {limit} in a row)"
            )
            self._write_state()
            if delay:
                await asyncio.sleep(delay)
                if self._spec_changed():
                    return
            started = await self._start_one()
            if started is None:
                return
            if started:
                self.state = "running"
                self.message = ""
                self.up_since = time.monotonic()
                self._write_state()
                return
            self.crashes_in_row += 1

    def _fail_without_secrets(self, missing: list[str]) -> None:
        name = self.spec.get("deployment") or "NAME"
        self.state = "failed"
        self.message = (
            f"the server exited and cannot be restarted by this front: the values of its "
            f"secret variables ({', '.join(missing)}) are kept only in the memory of the front "
            f"that was handed them, and this front was started again. `zmd models start "
            f"{name}` resolves them through ZenML and starts the server."
        )
        self._write_state()

    def _fail(self, limit: int) -> None:
        tail = _tail(self.spec.get("log_path"))
        redact = (self._secrets_of_origin() or {}).get("redact") or []
        for value in sorted(redact, key=len, reverse=True):
            if value:
                tail = tail.replace(value, "***")
        self.state = "failed"
        self.message = (
            f"revision {self.spec.get('config_hash', '?')} kept crashing: {limit} restarts "
            f"in a row failed, so it is no longer restarted. Last lines of its log "
            f"({self.spec.get('log_path')}):\n{tail}"
        )
        self._write_state()

    def _track(self) -> None:
        """Keeps a pidfd on the watched server in the event loop: its exit wakes :meth:`_wait`."""
        if self._fd is not None and same_process(self._fd_ident, self.watched):
            return
        self._untrack()
        self._fd = _pidfd(self.watched)
        if self._fd is None:
            return
        self._fd_ident = self.watched
        wake = self._wake = asyncio.Event()
        fd = self._fd

        def exited() -> None:
            asyncio.get_running_loop().remove_reader(fd)  # it stays readable
            wake.set()

        asyncio.get_running_loop().add_reader(fd, exited)

    def _untrack(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self._fd)
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self._fd, self._fd_ident, self._wake = None, None, None

    async def _wait(self) -> None:
        """Until the watched server exits, or at most POLL_INTERVAL (spec changes)."""
        self._track()
        if self._wake is None:
            await asyncio.sleep(POLL_INTERVAL)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), POLL_INTERVAL)

    async def run(self) -> None:
        """Supervises until cancelled."""
        self._load_spec(initial=True)
        while True:
            await self._wait()
            self._reap()
            if self._load_spec() or self.watched is None:
                continue
            if live_process(self.watched) is not None:
                stable = self._policy("stable_after", 30.0)
                if self.crashes_in_row and time.monotonic() - self.up_since >= stable:
                    self.crashes_in_row = 0
                self._refresh_children()
                continue
            # A deliberate retirement (an update) records the new revision first: re-check.
            if self._load_spec():
                continue
            await self._heal()

    async def close(self) -> None:
        """Stops supervising; a server still starting is ended (it would serve nobody)."""
        self._untrack()
        if self._starting is not None:
            await self._end(self._starting)
        self._reap()

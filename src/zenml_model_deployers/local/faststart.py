"""A fast path for `zmd models start` of a stopped local deployment, without ZenML.

Importing ZenML costs about 4 s of a `zmd models start` that then spends about 2 s starting the
server. For the simple case, this module does what ``LocalProcessService.start_backend`` and
the deployer's ``start`` do, with the same functions (``local/launch.py``,
``wait_until_ready``) and the same files, and records the result in ZenML's store:

- the deployment is a ``zmd-mlflow`` one whose front and server both do not run (stopped, or
  after a reboot), in a local SQLite store (:func:`fastlist.sqlite_store`);
- its revision needs nothing that only ZenML has: no secret reference in its env, no API key,
  no smoke input, no canary, no direct-data-path server of an older version (one that took
  the socket at its start); its last supervision spec
  (``supervise.json``) is of the recorded revision, and a downloaded model is in the
  revision's folder (no registry access);
- the deployment's lock is free (a deploy runs: ZenML's path waits for it).

Anything else returns None and the CLI takes ZenML's path (``ZMD_FAST_START=0`` forces it).

What is recorded, and why writing ZenML's store here is safe: the service row's ``status``
(the JSON ZenML's ``update_service`` writes: the new server, front and ports, ``active``, as
``update_status`` then ``mark_ready`` change it), its ``state`` and ``admin_state`` columns and
``updated``; nothing else changes on a start. The row is written in one SQLite transaction,
only if its status is still the one read under the deployment's lock (compare and set): a
writer that went around the lock (ZenML's own CLI) makes this path end what it started and fall
back. The database is ZenML's local SQLite file, which SQLite locks for concurrent writers; the
columns are checked first (another schema: ZenML's path). Every later command, ours or ZenML's,
reads the row as if ZenML's path had written it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from zenml_model_deployers.local.fastlist import _config_dir, decode_blob, sqlite_store
from zenml_model_deployers.local.state import (
    SPEC_FILE,
    env_with_venv_path,
    live_process,
    orphans,
    python_executable,
    read_json,
    spawn_logged,
)
from zenml_model_deployers.lock import lock_file
from zenml_model_deployers.secrets import is_secret_reference

MLFLOW_SOURCE = "zenml_model_deployers.flavors.mlflow.service.MLflowDeploymentService"
_COLUMNS = {"id", "status", "state", "admin_state", "updated", "service_source", "flavor"}
_LOCK_WAIT = 0.5


def _simple(row: dict[str, Any]) -> dict[str, Any] | None:
    """The old supervision spec when the row is one this path starts (module docstring)."""
    if os.environ.get("ZMD_FAST_START", "1") == "0" or row["flavor"] != "zmd-mlflow":
        return None
    config, status = row["config"], row["status"]
    if status.get("canary_config") or status.get("canary_server"):
        return None
    if config.get("api_key") or config.get("smoke_input") is not None:
        return None
    if any(is_secret_reference(str(v)) for v in (config.get("env") or {}).values()):
        return None
    if live_process(status.get("server")) or live_process(status.get("relay")):
        return None  # the front restarts or adopts: ZenML's path
    sup = row.get("supervision") or {}
    if sup and live_process(sup.get("server")):
        return None
    spec = read_json(row["workdir"] / SPEC_FILE)
    h = status.get("config_hash")
    if not h or not spec or spec.get("config_hash") != h or spec.get("deployment") != row["name"]:
        return None
    if spec.get("cwd") != str(row["workdir"]) or "--port" not in (spec.get("argv") or []):
        return None
    if (config.get("data_path") == "direct" or status.get("direct")) and (
        "--accept-gate" not in spec["argv"]
    ):
        return None  # a server that takes the socket at its start: ZenML's path
    from zenml_model_deployers.flavors.mlflow import serve

    argv = [str(a) for a in spec["argv"]]
    uri = str(config.get("model_uri", ""))
    if "--revision-dir" not in argv:
        return None
    folder = Path(argv[argv.index("--revision-dir") + 1])
    if folder.name != h or (
        not serve.is_local(uri)
        and serve.read_record(folder, argv[argv.index("--model-uri") + 1]) is None
    ):
        return None  # not resolved yet: the server would download it (ZenML's path)
    return spec


def _raw_row(con: sqlite3.Connection, rid: str) -> tuple[Any, str] | None:
    """The row's status blob and service class, as stored."""
    cols = {r[1] for r in con.execute("PRAGMA table_info(service)")}
    if not _COLUMNS <= cols:
        return None
    found = con.execute(
        "SELECT status, service_source FROM service WHERE id = ?", (rid.replace("-", ""),)
    ).fetchone()
    return (found[0], str(found[1])) if found else None


def _update_state(status: dict[str, Any], state: str, error: str = "") -> None:
    """ZenML's ``ServiceStatus.update_state`` on the status's JSON."""
    if state and status.get("state") != state:
        status["last_state"] = status.get("state", "inactive")
        status["state"] = state
    if error:
        status["last_error"] = error


def _write(db: str, rid: str, before: Any, status: dict[str, Any], admin: str | None) -> bool:
    """Writes the row's status (and admin state) if it is still ``before``; True if written."""
    import base64

    blob = base64.b64encode(json.dumps(status).encode())
    now = datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
    con = sqlite3.connect(db, timeout=10, isolation_level=None)
    try:
        con.execute("BEGIN IMMEDIATE")
        sets = "status = ?, state = ?, updated = ?" + (", admin_state = ?" if admin else "")
        args: list[Any] = [blob, status.get("state"), now, *([admin] if admin else [])]
        cur = con.execute(
            f"UPDATE service SET {sets} WHERE id = ? AND status IS ?",
            (*args, rid.replace("-", ""), before),
        )
        con.execute("COMMIT" if cur.rowcount == 1 else "ROLLBACK")
        return cur.rowcount == 1
    finally:
        con.close()


def _open_gate(gate: Path, log: Path, server: Any, workers: int, timeout: float) -> bool:
    """Opens a ready server's gate and waits until each worker accepts on the public socket
    (``Revisions.handoff``); False (the gate closed again, the relay serving) if they did not."""
    from zenml_model_deployers.local.gate import OPENED, wake

    gate.touch(mode=0o600)
    wake(server.pid)  # its workers look at the gate now, not at their next poll
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.is_alive():
        with contextlib.suppress(OSError):
            if log.read_text(errors="replace").count(OPENED) >= workers:
                return True
        time.sleep(0.005)
    gate.unlink(missing_ok=True)
    return False


def start(row: dict[str, Any], timeout: float | None) -> str | None:
    """Starts a stopped deployment (a row of :func:`fastlist.local_rows`) on its recorded URL,
    or returns None when ZenML's path must do it (module docstring).

    Args:
        row: the deployment's row.
        timeout: seconds to wait until it serves (default: the deploy's).

    Returns:
        The prediction URL, or None.

    Raises:
        DeploymentError: the server or its front did not start (recorded on the row, as
            ZenML's path records it); the deployment stays stopped.
    """
    spec = _simple(row)
    store = sqlite_store()
    if spec is None or store is None:
        return None
    db = store[0]
    from filelock import FileLock, Timeout

    lock = FileLock(str(lock_file(_config_dir() / "zmd", row["flavor"], row["name"])), mode=0o600)
    try:
        lock.acquire(timeout=_LOCK_WAIT)
    except Timeout:
        return None
    try:
        # Read again under the lock: the row this start compares and sets.
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            raw = _raw_row(con, row["id"])
        finally:
            con.close()
        if raw is None or raw[1] != MLFLOW_SOURCE:
            return None
        status = decode_blob(raw[0])
        seen = row["status"]
        if any(status.get(k) != seen.get(k) for k in ("config_hash", "relay", "revision", "url")):
            return None  # changed since it was read
        if live_process(status.get("server")) or live_process(status.get("relay")):
            return None
        return _start_locked(row, status, spec, db, raw[0], timeout)
    finally:
        lock.release()


def _start_locked(
    row: dict[str, Any],
    status: dict[str, Any],
    spec: dict[str, Any],
    db: str,
    before: Any,
    timeout: float | None,
) -> str | None:
    # Only light imports until the server runs: it loads while the rest is imported.
    from zenml_model_deployers.flavors.mlflow import serve
    from zenml_model_deployers.local.launch import free_port, port_is_free

    name, workdir, config = row["name"], Path(row["workdir"]), row["config"]
    host = str(config.get("host") or "127.0.0.1")
    public = int(config.get("port") or status.get("public_port") or 0)
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{public}"
    if (
        not public
        or status.get("url") != url
        or status.get("prediction_url") != url + "/invocations"
    ):
        return None  # the URL would move: ZenML's path records it
    if not port_is_free(host, public):
        return None  # ZenML's path says which port and what to run
    t = float(timeout or spec.get("ready_timeout") or 300.0)
    h = str(status["config_hash"])

    # ZenML's path first reads the live state (update_status), then starts.
    _update_state(status, row["state"], row["message"])
    known = [status.get(k) for k in ("server", "relay", "canary_server")]
    found = orphans(workdir, known, python_executable())
    if found:
        from zenml_model_deployers.local.process import terminate_all

        terminate_all(found, 5)

    status["server"] = None
    port = free_port()
    argv = [str(a) for a in spec["argv"]]
    argv[argv.index("--port") + 1] = str(port)
    env = env_with_venv_path({str(k): str(v) for k, v in (config.get("env") or {}).items()})
    for k, v in serve.SERVER_ENV_DEFAULTS.items():
        env.setdefault(k, v)
    log = workdir / f"server-{h}-{int(time.time())}.log"
    gate: Path | None = None
    if "--accept-gate" in argv:
        # The direct data path: the server is checked on its private port, then takes the
        # public socket at its gate (local/gate.py), as ZenML's path does it.
        gate = log.with_suffix(".gate")
        gate.unlink(missing_ok=True)
        argv[argv.index("--accept-gate") + 1] = str(gate)
    popen = spawn_logged(argv, log, env=env, cwd=workdir)

    from zenml_model_deployers.local import process as proc
    from zenml_model_deployers.local.launch import (
        make_tree_private,
        restart_env,
        start_front,
    )
    from zenml_model_deployers.local.readiness import wait_until_ready
    from zenml_model_deployers.local.relay_control import control_request
    from zenml_model_deployers.local.supervisor import write_spec

    server = proc.adopt(popen)
    metrics_port = int(config.get("metrics_port") or status.get("metrics_port") or 0)
    if metrics_port and not port_is_free("127.0.0.1", metrics_port):
        metrics_port = 0 if not config.get("metrics_port") else metrics_port
    relay: proc.ProcessHandle | None = None
    try:
        # The front starts while the server loads (as a deploy does it).
        relay, info = start_front(
            workdir=workdir,
            deployment_name=name,
            host=host,
            port=public,
            metrics_port=metrics_port,
            target=None,
            target_revision=h,
            api_key=None,
        )
        token = str(info.get("token", ""))
        if gate is not None:
            # As ZenML's path (Front.ensure_out): clients wait in the socket's backlog until
            # the server opens its gate, so no connection is left with the relay to end.
            out = {"cmd": "accept", "on": False, "timeout": 0}
            control_request(int(info["control_port"]), token, out, 30)
        base = f"http://127.0.0.1:{port}"
        wait_until_ready(
            deployment_name=name,
            process=server,
            log_path=log,
            health_url=base + str(config.get("health_path") or "/ping"),
            health_method=str(config.get("health_method") or "GET"),
            timeout=t,
            keep_log=proc.keep_failed_log,
        )
        switch = {"cmd": "switch", "port": port, "api_key": None, "revision": h}
        reply = control_request(int(info["control_port"]), token, switch, 30)
        if not reply.get("ok"):
            from zenml_model_deployers.errors import DeploymentError

            raise DeploymentError(
                f"The relay of '{name}' refused switch: {reply}", deployment_name=name
            )
        direct = gate is not None and _open_gate(
            gate, log, server, int(config.get("workers") or 1), min(t, 10.0)
        )
        if gate is not None and not direct:  # the gate did not open: the relay serves
            on = {"cmd": "accept", "on": True}
            control_request(int(info["control_port"]), token, on, 30)
    except BaseException as e:
        # As ZenML's path: the front goes, the server goes, the row says why.
        for handle in (server, relay):
            if handle is not None:
                handle.terminate(5)
        status.update(relay=None, control_port=None)
        _update_state(status, "error", f"start failed: {e}"[:2000])
        with contextlib.suppress(Exception):
            _write(db, row["id"], before, status, None)
        raise
    write_spec(
        workdir / SPEC_FILE,
        {
            **spec,
            "argv": argv,
            "env": restart_env(env, set(config.get("env") or {}), serve.RESTART_INHERITED_ENV),
            "port": port,
            "server": server.model_dump(mode="json"),
            "log_path": str(log),
            "ready_timeout": t,
            "redact": [],
        },
    )
    make_tree_private(workdir)
    status.update(
        server=server.model_dump(mode="json"),
        server_port=port,
        direct=direct,
        log_path=str(log),
        restarts=0,
        relay=relay.model_dump(mode="json"),
        public_port=int(info["port"]),
        control_port=int(info["control_port"]),
        metrics_port=int(info.get("metrics_port") or 0) or None,
        deployed_at=datetime.now(UTC).isoformat(),
    )
    # mark_ready: state active, error cleared, admin state active (the URL did not move).
    _update_state(status, "active")
    status["last_error"] = ""
    if not _write(db, row["id"], before, status, "active"):
        # Someone changed the row meanwhile, around the lock: leave it to ZenML's path.
        relay.terminate(5)
        server.terminate(5)
        return None
    return str(status["prediction_url"])

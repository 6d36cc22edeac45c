"""The server process of a `zmd-mlflow` revision: what `mlflow models serve --env-manager local`
does, in one Python instead of two.

`mlflow models serve` imports MLflow, downloads the model URI to a local path, asks
``mlflow.pyfunc.scoring_server.get_cmd`` for the scoring server's command (uvicorn serving
``mlflow.pyfunc.scoring_server.app:app``, the model path and request timeout in its environment)
and runs it in a second Python, which imports MLflow again and stays the only one serving while
the first waits as its idle parent. This process does the same steps and then runs that very
command's uvicorn in itself (``uvicorn.main``, uvicorn's own command line), where MLflow is
imported already:

- the model is resolved once per revision into ``<deployment>/revisions/<config hash>/``: a
  ``runs:/``, ``models:/`` or remote URI is downloaded there with MLflow's own
  ``mlflow.artifacts.download_artifacts``; a local path is served in place, as
  `mlflow models serve` does. The folder is complete before it gets its name (a rename) and is
  never changed afterwards, so a restart (the front's self-heal, ``zmd models start``) reads its
  ``revision.json`` and needs no registry or network;
- the command and its environment come from the installed MLflow at every start (``get_cmd``);
  only its program, ``uvicorn``, runs here instead of in a child.

With ``--listen-fd-from PATH`` (the direct data path, ``data_path="direct"``) the server does
not bind a port: it receives the deployment's public listening socket from the front over the
Unix socket at PATH (SCM_RIGHTS) and uvicorn accepts on it (``--fd``; each worker gets a copy),
so requests reach the server without passing through the relay. uvicorn builds an ``--fd``
socket as ``AF_UNIX`` (it was written for socket activation of Unix sockets); this one is TCP,
so its family is read from the descriptor instead (TCP_NODELAY and peer addresses work).

With ``--accept-gate GATE`` as well, the server binds its private ``--port`` and serves there
first; it takes the public socket from the front only while the file GATE exists
(``gate.py``: how a verified server starts serving the public port without starting again).

Errors are MLflow's, raised as they are (a missing model: ``MlflowException: No such artifact``);
the front turns the log's last exception into the deployment's error. Only the standard library
is imported before MLflow.

Usage: ``python -m zenml_model_deployers.flavors.mlflow.serve --model-uri URI --revision-dir DIR
--port P [--workers N] [--timeout S] [--listen-fd-from PATH [--accept-gate GATE]] [--metrics-dir DIR
--revision HASH --deployment NAME]``. With ``--metrics-dir`` (the direct data path) the server counts its own
requests (``metered.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import socket
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

RECORD_FILE = "revision.json"
MODEL_DIR = "model"
# Revision folders kept per deployment: the serving one, a canary's, a few to go back to.
KEEP_REVISIONS = 4
_PARTIAL = ".partial-"
# What a revision's server gets on top of the caller's environment and its configured env
# (MLflow offline, with a file store), and what its restarts keep from the deploying process
# (MLflow's own settings): MLflowDeploymentService and the CLI's fast `zmd models start`.
SERVER_ENV_DEFAULTS = {"MLFLOW_ALLOW_FILE_STORE": "true", "PYTHONUNBUFFERED": "1"}
RESTART_INHERITED_ENV = ("MLFLOW_",)
MLFLOW_APP = "mlflow.pyfunc.scoring_server.app:app"


def is_local(uri: str) -> bool:
    """Tells whether a model URI names this machine's file system (served in place).

    Args:
        uri: a model URI or path.

    Returns:
        True for plain paths and ``file:`` URIs.
    """
    return urllib.parse.urlparse(uri).scheme in ("", "file")


def read_record(revision_dir: Path, model_uri: str) -> dict[str, Any] | None:
    """The revision's record when it is complete and its model is still there.

    Args:
        revision_dir: ``<deployment>/revisions/<config hash>``.
        model_uri: the URI the config names (a record of another one does not count).

    Returns:
        ``{"model_uri", "model_path"}`` or None.
    """
    try:
        record = json.loads((revision_dir / RECORD_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("model_uri") != model_uri:
        return None
    if not Path(str(record.get("model_path", ""))).exists():
        return None
    return record


def resolve_model(model_uri: str, revision_dir: Path) -> str:
    """The local model directory of a revision, resolved once (see the module docstring).

    Args:
        model_uri: any MLflow model URI.
        revision_dir: where the revision's files live.

    Returns:
        The local path the scoring server loads.
    """
    record = read_record(revision_dir, model_uri)
    if record is not None:
        with contextlib.suppress(OSError):
            os.utime(revision_dir)  # in use again: the newest to keep
        return str(record["model_path"])
    import mlflow.artifacts

    revision_dir.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = Path(tempfile.mkdtemp(prefix=_PARTIAL, dir=revision_dir.parent))
    try:
        if is_local(model_uri):
            # In place, as `mlflow models serve` serves a local path (MLflow's error if missing).
            path = mlflow.artifacts.download_artifacts(artifact_uri=model_uri)
        else:
            got = mlflow.artifacts.download_artifacts(
                artifact_uri=model_uri, dst_path=str(tmp / MODEL_DIR)
            )
            path = str(revision_dir / Path(got).resolve().relative_to(tmp.resolve()))
        (tmp / RECORD_FILE).write_text(json.dumps({"model_uri": model_uri, "model_path": path}))
        with contextlib.suppress(FileNotFoundError):
            # An unreadable record of an interrupted older layout: replaced as a whole.
            if read_record(revision_dir, model_uri) is None:
                shutil.rmtree(revision_dir)
        try:
            os.rename(tmp, revision_dir)
        except OSError:  # another start of this revision completed first: its files are equal
            record = read_record(revision_dir, model_uri)
            if record is None:
                raise
            path = str(record["model_path"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    prune_revisions(revision_dir.parent, keep=revision_dir.name)
    return str(path)


def prune_revisions(root: Path, keep: str) -> None:
    """Removes the oldest revision folders beyond KEEP_REVISIONS (never ``keep``).

    Args:
        root: ``<deployment>/revisions``.
        keep: the folder name of the revision starting now.
    """
    with contextlib.suppress(OSError):
        entries = sorted(
            (p for p in root.iterdir() if (p / RECORD_FILE).is_file()),  # revisions only
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        others = [p for p in entries if p.name != keep]
        for p in others[KEEP_REVISIONS - 1 :]:
            shutil.rmtree(p, ignore_errors=True)


def scoring_command(
    model_path: str, port: int, timeout: int, workers: int
) -> tuple[list[str], dict[str, str]]:
    """The scoring server's command and environment, as the installed MLflow builds them.

    Args:
        model_path: the local model directory.
        port: the port to listen on (127.0.0.1).
        timeout: request timeout in seconds.
        workers: uvicorn workers.

    Returns:
        (argv starting with ``uvicorn``, the variables it sets beyond this environment).

    Raises:
        RuntimeError: this MLflow's command does not run uvicorn (unknown to this module).
    """
    from mlflow.pyfunc import scoring_server

    command, command_env = scoring_server.get_cmd(
        model_path,
        port=port,
        host="127.0.0.1",  # type: ignore[arg-type]  # MLflow annotates it as int
        timeout=timeout,
        nworkers=workers,
    )
    argv = shlex.split(command)
    if argv[:1] == ["exec"]:
        argv = argv[1:]
    if argv[:1] != ["uvicorn"]:
        raise RuntimeError(
            f"MLflow's scoring server command is not uvicorn: {command!r}; zmd-mlflow cannot "
            "run it. Use an MLflow version zenml-model-deployers supports (pyproject.toml)."
        )
    delta = {k: v for k, v in command_env.items() if os.environ.get(k) != v}
    return argv, delta


def inherit_listener(path: str, timeout: float = 10.0) -> socket.socket:
    """The front's listening socket, received over its Unix handoff socket (SCM_RIGHTS).

    Args:
        path: the front's handoff socket.
        timeout: seconds.

    Returns:
        The listening TCP socket (its family and type read from the descriptor).

    Raises:
        RuntimeError: the front did not hand a socket over.
    """
    import time

    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
        c.settimeout(timeout)
        while True:  # the front may still be starting (it starts beside its first server)
            try:
                c.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        _, fds, _, _ = socket.recv_fds(c, 16, 1)
    if not fds:
        raise RuntimeError(f"the deployment's front at {path} handed over no listening socket")
    return socket.socket(fileno=fds[0])


def _serve_on(sock: socket.socket) -> None:
    """Makes uvicorn's ``--fd`` socket keep the descriptor's own family (see the module)."""
    fromfd = socket.fromfd
    fd = sock.fileno()

    def family_preserving_fromfd(
        fileno: int, family: int, type: int, proto: int = 0
    ) -> socket.socket:
        if fileno == fd:
            return socket.socket(fileno=os.dup(fileno))
        return fromfd(fileno, family, type, proto)

    socket.fromfd = family_preserving_fromfd  # type: ignore[assignment]


def meter(argv: list[str], metrics_dir: Path, deployment: str, revision: str) -> None:
    """Serves MLflow's app wrapped in the request-counting middleware (``metered.py``), its
    series in ``metrics_dir`` (prometheus_client's multiprocess mode; uvicorn's workers inherit
    the environment).

    Args:
        argv: the uvicorn command (its app argument is replaced in place).
        metrics_dir: the revision's multiprocess folder (created).
        deployment: the deployment's name.
        revision: the revision's config hash.

    Raises:
        RuntimeError: the command does not serve MLflow's app.
    """
    if MLFLOW_APP not in argv:
        raise RuntimeError(f"MLflow's scoring server command serves no {MLFLOW_APP}: {argv}")
    metrics_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    # metered.py's DEPLOYMENT_ENV and REVISION_ENV, by name: importing metered here would make
    # its module-level `app` (None without them) before uvicorn imports it.
    os.environ["ZMD_METRICS_DEPLOYMENT"] = deployment
    os.environ["ZMD_METRICS_REVISION"] = revision
    argv[argv.index(MLFLOW_APP)] = "zenml_model_deployers.flavors.mlflow.metered:app"


def main(args: list[str] | None = None) -> None:
    """Resolves the revision's model, then serves it with MLflow's scoring server command.

    Args:
        args: command line (default: ``sys.argv[1:]``).
    """
    ap = argparse.ArgumentParser(prog="zenml_model_deployers.flavors.mlflow.serve")
    ap.add_argument("--model-uri", required=True)
    ap.add_argument("--revision-dir", required=True, type=Path)
    ap.add_argument("--port", required=True, type=int)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--timeout", type=int, default=60)
    ap.add_argument("--listen-fd-from", default=None, help="the front's handoff Unix socket")
    ap.add_argument("--accept-gate", default=None, help="take the socket while this file exists")
    ap.add_argument("--metrics-dir", default=None, help="count requests here (metered.py)")
    ap.add_argument("--revision", default="", help="the revision's config hash (metrics label)")
    ap.add_argument("--deployment", default="", help="the deployment's name (metrics label)")
    ns = ap.parse_args(args)
    model_path = resolve_model(ns.model_uri, ns.revision_dir)
    argv, env = scoring_command(model_path, ns.port, ns.timeout, ns.workers)
    os.environ.update(env)
    if ns.listen_fd_from and ns.accept_gate:
        # Serves the private port; each worker takes the public socket at the gate (gate.py,
        # installed by metered.py, which a gate needs).
        from zenml_model_deployers.local import gate

        if not ns.metrics_dir:
            raise RuntimeError("--accept-gate needs --metrics-dir (the server counts requests)")
        os.environ[gate.GATE_ENV] = ns.accept_gate
        os.environ[gate.HANDOFF_ENV] = ns.listen_fd_from
        os.environ[gate.PRIVATE_PORT_ENV] = str(ns.port)
    elif ns.listen_fd_from:
        # uvicorn takes --fd over --host/--port (both kept as MLflow built them).
        sock = inherit_listener(ns.listen_fd_from)
        _serve_on(sock)
        argv += ["--fd", str(sock.fileno())]
    if ns.metrics_dir:
        meter(argv, Path(ns.metrics_dir), ns.deployment, ns.revision)
    print(f"=== zmd: serving {model_path} with MLflow's command: {shlex.join(argv)}", flush=True)
    import uvicorn

    uvicorn.main.main(args=argv[1:], prog_name="uvicorn")


if __name__ == "__main__":
    main()

"""Starting a local deployment's processes, without ZenML: the front (relay), the environment
a restarted server keeps, and the processes an interrupted deploy left behind.

``LocalProcessService`` (ZenML's path) and the CLI's fast ``zmd models start``
(``local/faststart.py``) both start processes through these functions, so both start them
the same way. Standard library, psutil and pydantic (``ProcessHandle``) only.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from zenml_model_deployers.errors import DeploymentError, PortInUseError
from zenml_model_deployers.local import process as proc
from zenml_model_deployers.local.relay_control import API_KEY_ENV, read_ready_file
from zenml_model_deployers.local.state import SPEC_FILE, tail

# What a restarted server inherits from the deploying process (exact names; a trailing "_" is a
# prefix): a process runtime, and nothing else. The first start inherits the whole environment
# (a model download may need the user's cloud credentials); the supervision spec, which the
# front reads to restart the server, is a file and keeps only this, the configured env and what
# the flavor sets (see LocalProcessService.restart_env).
RUNTIME_ENV: tuple[str, ...] = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "LC_",
    "TZ",
    "TMPDIR",
    "TEMP",
    "TMP",
    "VIRTUAL_ENV",
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONUNBUFFERED",
    "LD_LIBRARY_PATH",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
)
FRONT_READY_TIMEOUT = 15.0
# The front's Unix socket that hands its listening socket to a direct-data-path server.
HANDOFF_SOCKET = "front.sock"
# Where a direct-data-path server's workers write their request counts (one folder per
# revision), which the front reads beside its own.
METRICS_DIR = "metrics"


def env_name_matches(name: str, patterns: tuple[str, ...]) -> bool:
    """Whether a variable is one of ``patterns`` (exact names; a trailing "_" is a prefix).

    Args:
        name: the variable's name.
        patterns: names and prefixes.

    Returns:
        True when it matches.
    """
    return any(name.startswith(p) if p.endswith("_") else name == p for p in patterns)


def restart_env(
    env: Mapping[str, str], configured: set[str], inherited: tuple[str, ...]
) -> dict[str, str]:
    """The subset of a server's environment its restarts keep (see
    ``LocalProcessService.restart_env``): the runtime's and the flavor's variables
    (``inherited``), the configured ones, and whatever differs from this process's own.

    Args:
        env: the environment the server was started with.
        configured: the names the deployment's config sets.
        inherited: the flavor's names and prefixes (``RESTART_INHERITED_ENV``).

    Returns:
        The subset (contains resolved secrets: never log it).
    """
    patterns = RUNTIME_ENV + inherited
    return {
        k: v
        for k, v in env.items()
        if k in configured or os.environ.get(k) != v or env_name_matches(k, patterns)
    }


def make_tree_private(root: Path) -> None:
    """Removes group and other permissions from everything under `root` (a packaged model,
    a bento home: written by libraries that follow the umask).

    Args:
        root: a folder or file.
    """
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            p = os.path.join(dirpath, name)
            with contextlib.suppress(OSError):
                st = os.lstat(p)
                if st.st_mode & 0o077 and not os.path.islink(p):
                    os.chmod(p, st.st_mode & 0o700)
    with contextlib.suppress(OSError):
        st = os.lstat(root)
        if st.st_mode & 0o077:
            os.chmod(root, st.st_mode & 0o700)


def start_front(
    *,
    workdir: Path,
    deployment_name: str,
    host: str,
    port: int,
    metrics_port: int,
    target: int | None,
    target_revision: str,
    api_key: str | None,
    open_paths: tuple[str, ...] = (),
) -> tuple[proc.ProcessHandle, dict[str, Any]]:
    """Starts a deployment's front (the relay, which supervises its server) and waits until it
    listens.

    Args:
        workdir: the deployment's directory (it exists).
        deployment_name: its name.
        host: the address of its URL.
        port: the URL's port (0: any free one).
        metrics_port: the Prometheus port (0: any free one).
        target: the private port of a server that runs, if any.
        target_revision: that server's revision (config hash), if known.
        api_key: the deployment's resolved API key (the relay's environment, never argv).
        open_paths: paths answered without the key (GET/HEAD only), e.g. a health route.

    Returns:
        The relay's handle and its ready file (ports, control token).

    Raises:
        PortInUseError: the port is taken.
        DeploymentError: the relay did not start (its log's last lines in the message).
    """
    ready = workdir / "relay.json"
    ready.unlink(missing_ok=True)
    log = workdir / "relay.log"
    argv = [proc.python_executable(), "-m", "zenml_model_deployers.local.relay"]
    argv += ["--host", host, "--port", str(port), "--ready-file", str(ready)]
    argv += ["--supervise", str(workdir / SPEC_FILE)]
    argv += ["--deployment", deployment_name]
    argv += ["--handoff", str(workdir / HANDOFF_SOCKET)]
    argv += ["--metrics-dir", str(workdir / METRICS_DIR)]
    argv += ["--metrics-port", str(metrics_port)]
    for path in open_paths:
        argv += ["--open-path", path]
    if target is not None:
        argv += ["--target", str(target)]
        if target_revision:
            argv += ["--target-revision", target_revision]
    env = proc.env_with_venv_path()
    env.pop(API_KEY_ENV, None)  # never one inherited from the deploying process
    if api_key:
        env[API_KEY_ENV] = api_key  # the environment, never argv (visible to every user)
    handle = proc.spawn(argv, log, env=env)
    deadline = time.monotonic() + FRONT_READY_TIMEOUT
    while not ready.exists():
        proc.reap_children()
        if not handle.is_alive() or time.monotonic() > deadline:
            handle.terminate(2)
            msg = tail(log, 5)
            cls = PortInUseError if "cannot listen" in msg else DeploymentError
            raise cls(
                f"The front (relay) of deployment '{deployment_name}' did not start.",
                deployment_name=deployment_name,
                backend_message=msg,
                hint="free the port or choose another one.",
            )
        time.sleep(0.02)
    return handle, read_ready_file(ready)


def port_is_free(host: str, port: int) -> bool:
    """Tells whether a TCP port can be bound on `host` right now.

    Args:
        host: address.
        port: port.

    Returns:
        True if free.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS considers free on `host`.

    Args:
        host: address.

    Returns:
        A port number.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])

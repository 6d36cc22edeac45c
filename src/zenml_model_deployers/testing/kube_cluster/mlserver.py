"""The simulated cluster's model server: one real MLServer process (the server Seldon Core 2
runs) and its model repository, into which both controllers load models; models retired after
the requests in flight to them drained."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse


def find_mlserver() -> list[str]:
    """The command that runs MLServer: ``$ZMD_MLSERVER``, the one ``make test`` builds, or PATH.

    Returns:
        argv prefix, e.g. ``["/repo/.venv/mlserver/bin/mlserver"]``.

    Raises:
        FileNotFoundError: none found (says how to get one).
    """
    candidates = [
        os.environ.get("ZMD_MLSERVER", ""),
        str(Path(sys.prefix) / "mlserver" / "bin" / "mlserver"),
        shutil.which("mlserver") or "",
    ]
    for c in candidates:
        if c and Path(c).is_file():
            return [c]
    raise FileNotFoundError(
        "No MLServer found: run `make test` (it builds .venv/mlserver), or install "
        "`mlserver mlserver-sklearn` (and mlserver-xgboost, -lightgbm, -mlflow for those "
        "formats) in an environment and set ZMD_MLSERVER to its `mlserver`."
    )


def runtime_settings(path: Path, spec: dict[str, Any]) -> tuple[str, Path, dict[str, Any]]:
    """The MLServer runtime, model URI and extra parameters a model is loaded with, as the
    controllers pick them:

    - KServe (a ``modelFormat`` in ``spec``): ``kserve-mlserver`` sets the runtime class of the
      format (KServe's ``MLServerModelClass*`` constants: the ones in
      :data:`~zenml_model_deployers.packaging.native.MLSERVER_RUNTIMES`) and points MLServer at
      the model folder, where each runtime finds its well-known file;
    - Seldon Core 2: its agent loads the folder by the ``model-settings.json`` in it (runtime,
      ``parameters.uri`` relative to the folder). A folder without one (which a real Seldon
      Core 2 refuses: "Failed to find an mlserver settings file") is loaded leniently by its
      ``requirements``: mlflow's runtime if they name ``mlflow``, else sklearn's.

    Args:
        path: the model's folder (or file).
        spec: the model's spec.

    Returns:
        (runtime class, model URI, extra parameters).
    """
    from zenml_model_deployers.packaging.native import MLSERVER_RUNTIMES

    extra = {p["name"]: p["value"] for p in spec.get("parameters") or []}
    fmt = spec.get("modelFormat")
    if fmt:
        return MLSERVER_RUNTIMES[str(fmt)], path, extra
    own = path / "model-settings.json"
    if path.is_dir() and own.is_file():
        settings = json.loads(own.read_text())
        params = settings.get("parameters") or {}
        uri = path / str(params.get("uri") or ".")
        return str(settings.get("implementation")), uri, {**(params.get("extra") or {}), **extra}
    reqs = set(spec.get("requirements") or [])
    return MLSERVER_RUNTIMES["mlflow" if "mlflow" in reqs else "sklearn"], path, extra


def free_port() -> int:
    """A free TCP port on 127.0.0.1.

    Returns:
        The port.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LoadedModel:
    """A Model the controller serves: its internal MLServer name per generation (and, for
    KServe, the ServingRuntime whose answers the gateway gives, and for its xgbserver the
    booster's objective, which decides what a ``Booster`` predicts)."""

    name: str
    namespace: str
    generation: int
    internal: str
    spec_digest: str
    runtime: str = ""
    objective: str = ""


class MLServerHost:
    """One MLServer process with an empty repository; models are loaded and unloaded through
    its repository API, each under an internal name.

    Attributes:
        failures: storage URI substring -> the error every load of such a URI fails with.
        drain_seconds: seconds a retired model keeps answering requests already routed to it
            (a pod's termination grace period); without it an in-flight request meets a 404.
    """

    def __init__(self, root: Path) -> None:
        """Prepares the server's files under ``root`` (``start`` runs it).

        Args:
            root: the cluster's working directory.
        """
        self._root = root
        self._repo = root / "mlserver-repo"
        self._log = root / "mlserver.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._port = 0
        self._metrics_port = 0
        self.failures: dict[str, str] = {}
        self.drain_seconds = 1.0
        self._timers: list[threading.Timer] = []

    def start(self) -> None:
        """Starts MLServer and waits until it is live (90 s at most).

        Raises:
            RuntimeError: it exited or did not become live (its log's tail says why).
        """
        self._repo.mkdir(parents=True)
        self._port = free_port()
        self._metrics_port = free_port()
        (self._repo / "settings.json").write_text(
            json.dumps(
                {
                    "load_models_at_startup": False,
                    "http_port": self._port,
                    "grpc_port": free_port(),
                    "metrics_port": self._metrics_port,
                    "parallel_workers": 0,
                    "host": "127.0.0.1",
                }
            )
        )
        with open(self._log, "wb") as log:
            self._proc = subprocess.Popen(  # noqa: S603 - our own argv
                [*find_mlserver(), "start", str(self._repo)],
                cwd=str(self._root),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        import requests

        deadline = time.monotonic() + 90
        url = f"http://127.0.0.1:{self._port}/v2/health/live"
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"MLServer exited: {self.log_tail()}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(url, timeout=1).status_code == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"MLServer did not start in 90 s: {self.log_tail()}")

    def close(self) -> None:
        """Runs the pending retirements now (a drained server process must not outlive the
        cluster), then stops MLServer by its pid."""
        for timer in self._timers:
            if timer.is_alive():
                timer.cancel()
                with contextlib.suppress(Exception):
                    timer.function(*timer.args)
        if self._proc is not None:
            import psutil

            from zenml_model_deployers.local.process import terminate_all

            with contextlib.suppress(psutil.Error):
                terminate_all([psutil.Process(self._proc.pid)], 10)
            with contextlib.suppress(Exception):
                self._proc.wait(timeout=5)

    @property
    def metrics_url(self) -> str:
        """MLServer's Prometheus endpoint (its metrics port), what a Prometheus scrapes."""
        return f"http://127.0.0.1:{self._metrics_port}/metrics"

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of MLServer's log.

        Args:
            lines: how many.

        Returns:
            Text.
        """
        try:
            return "\n".join(self._log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def request(self, method: str, path: str, **kw: Any) -> Any:
        """One request to MLServer.

        Args:
            method: HTTP method.
            path: e.g. ``/v2/models/x/infer``.
            **kw: ``requests`` arguments.

        Returns:
            The ``requests`` response.
        """
        import requests

        return requests.request(method, f"http://127.0.0.1:{self._port}{path}", timeout=60, **kw)

    def forward_v2(
        self, method: str, loaded: LoadedModel, rest: str, body: bytes, name: str
    ) -> tuple[int, bytes]:
        """Forwards a V2 request for a model to its loaded version; the answer names the model
        as the client knows it, not the internal name.

        Args:
            method: HTTP method.
            loaded: what serves the model.
            rest: the path after ``/v2/models/{name}``.
            body: the request body.
            name: the model's name.

        Returns:
            (status, body).
        """
        r = self.request(
            method,
            f"/v2/models/{loaded.internal}{rest}",
            data=body or None,
            headers={"Content-Type": "application/json"} if body else {},
        )
        content = r.content
        if r.status_code == 200 and content:
            with contextlib.suppress(ValueError):
                data = r.json()
                if isinstance(data, dict) and data.get("model_name") == loaded.internal:
                    data["model_name"] = name
                    content = json.dumps(data).encode()
        return r.status_code, content

    def load(self, internal: str, spec: dict[str, Any]) -> str:
        """Loads a model (``storageUri``, ``requirements``, ``parameters`` as a Seldon Model's
        spec has them, or KServe's ``modelFormat``) under an internal name, with the runtime
        :func:`runtime_settings` picks.

        Args:
            internal: its MLServer name.
            spec: the model's spec.

        Returns:
            "" when loaded; else the error (MLServer's own words, or a planted failure).
        """
        uri = str(spec.get("storageUri") or "")
        for part, message in self.failures.items():
            if part in uri:
                return message
        path = Path(urlparse(uri).path) if uri.startswith("file://") else Path(uri)
        if not path.is_absolute():
            return (
                f"failed to download model from {uri}: only local paths and file:// URIs "
                "exist in the simulated cluster"
            )
        implementation, uri_in, params = runtime_settings(path, spec)
        settings = {
            "name": internal,
            "implementation": implementation,
            "parameters": {"uri": str(uri_in), "version": internal, "extra": params},
        }
        d = self._repo / internal
        d.mkdir(parents=True, exist_ok=True)
        (d / "model-settings.json").write_text(json.dumps(settings))
        r = self.request("POST", f"/v2/repository/models/{internal}/load")
        if r.status_code == 200:
            return ""
        shutil.rmtree(d, ignore_errors=True)
        try:
            return str(r.json().get("error") or r.text)
        except ValueError:
            return r.text or f"MLServer answered {r.status_code}"

    def unload(self, internal: str) -> None:
        """Unloads a model now (quietly: it may be gone already).

        Args:
            internal: its MLServer name.
        """
        with contextlib.suppress(Exception):
            self.request("POST", f"/v2/repository/models/{internal}/unload")
        shutil.rmtree(self._repo / internal, ignore_errors=True)

    def retire(self, internal: str) -> None:
        """Unloads a model no longer routed to once the requests in flight to it drained.

        Args:
            internal: its MLServer name.
        """
        self.later(self.unload, internal)

    def later(self, action: Any, *args: Any) -> None:
        """Runs ``action(*args)`` after ``drain_seconds`` (run at once by ``close``).

        Args:
            action: what to run.
            *args: its arguments.
        """
        timer = threading.Timer(self.drain_seconds, action, args=args)
        timer.daemon = True
        self._timers = [t for t in self._timers if t.is_alive()] + [timer]
        timer.start()

"""The simulated cluster's model server: one real MLServer process (the server Seldon Core 2
runs) and its model repository, into which both controllers load models; models retired after
the requests in flight to them drained."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
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


class LoadRefused(Exception):
    """A model the server side refuses before MLServer sees it; ``str()`` is the backend's own
    words (Seldon's agent, Seldon Core 1's model server)."""


@dataclass(frozen=True)
class RuntimeChoice:
    """How MLServer loads a model: its runtime, model URI, extra parameters, and the name it
    serves the model under where a ``model-settings.json`` in the folder overrides the one the
    cluster gave (``served_as``; "" when the cluster's name holds)."""

    implementation: str
    uri: Path
    extra: dict[str, Any]
    served_as: str = ""


# Seldon Core 2's agent (scheduler/pkg/agent/repository/mlserver/settings.go, branch v2 at
# 7b77f8b, the same commit as testing/crds): where a model folder has no model-settings.json,
# it writes one from the first of the Model's requirements it knows, finding the artifact by
# these extensions in the folder's top level.
AGENT_ARTIFACTS: dict[str, tuple[str, ...]] = {
    "sklearn": ("joblib", "pkl", "pickle"),
    "xgboost": ("json", "bst"),
    "lightgbm": ("bst",),
}
SETTINGS_FILE = "model-settings.json"


def _settings_from_file(path: Path, extra: dict[str, Any], env: str = "") -> RuntimeChoice:
    """MLServer's reading of a ``model-settings.json``: ``parameters.uri`` relative to its
    folder (the folder itself when unset); what the file leaves out comes from MLServer's
    environment (``env``: its ``MLSERVER_MODEL_IMPLEMENTATION``; its model name, so a file
    without a ``name`` keeps the cluster's)."""
    settings = json.loads(path.read_text())
    params = settings.get("parameters") or {}
    uri = path.parent / str(params.get("uri") or ".")
    return RuntimeChoice(
        str(settings.get("implementation") or env),
        uri,
        {**(params.get("extra") or {}), **extra},
        str(settings.get("name") or ""),
    )


def seldon_agent_settings(path: Path, spec: dict[str, Any]) -> RuntimeChoice:
    """The settings Seldon Core 2's agent loads a ``Model``'s folder into MLServer with (it
    then renames the model ``<model>_<version>``, so ``served_as`` is ""):

    - the ``model-settings.json`` at the folder's top, else in its highest-numbered version
      sub-folder;
    - else one made from the first requirement the agent knows (``sklearn``: ``*.joblib``,
      ``*.pkl``, ``*.pickle``; ``xgboost``: ``*.json``, ``*.bst``; ``lightgbm``: ``*.bst``;
      ``mlflow``: the folder; ``python``: the ``*.py`` defining an ``MLModel`` subclass;
      ``alibi-*``), or a refusal in the agent's words (their paths are the storage folder here,
      not the agent's copy of it).

    Args:
        path: the model's folder (or a single file, which the agent copies into a folder).
        spec: the Model's spec (``requirements``, ``parameters``).

    Returns:
        The choice.

    Raises:
        LoadRefused: the agent's error (nothing at the URI, no known requirement, no artifact).
    """
    extra = {p["name"]: p["value"] for p in spec.get("parameters") or []}
    if not path.exists():
        # rclone copies nothing from an absent source: the agent's check after the copy.
        raise LoadRefused(f"Failed to download from {spec.get('storageUri') or path} any files")
    folder, files = (path, sorted(path.iterdir())) if path.is_dir() else (path.parent, [path])
    if path.is_dir():
        if (path / SETTINGS_FILE).is_file():
            return replace(_settings_from_file(path / SETTINGS_FILE, extra), served_as="")
        versions = [
            d for d in files if d.is_dir() and d.name.isdigit() and (d / SETTINGS_FILE).is_file()
        ]
        if versions:
            top = max(versions, key=lambda d: int(d.name))
            return replace(_settings_from_file(top / SETTINGS_FILE, extra), served_as="")
    reqs = [str(r) for r in spec.get("requirements") or []]
    from zenml_model_deployers.packaging.native import MLSERVER_RUNTIMES

    for req in reqs:
        if req in AGENT_ARTIFACTS:
            for ext in AGENT_ARTIFACTS[req]:
                found = [f for f in files if f.is_file() and f.name.endswith(f".{ext}")]
                if found:
                    return RuntimeChoice(MLSERVER_RUNTIMES[req], found[0], extra)
            # The agent's words, "sklearn" whatever the requirement.
            raise LoadRefused(f"Failed to find sklearn artifact in {folder}")
        if req == "mlflow":
            return RuntimeChoice(MLSERVER_RUNTIMES["mlflow"], folder, extra)
        if req == "alibi-detect":
            return RuntimeChoice("mlserver_alibi_detect.AlibiDetectRuntime", folder, extra)
        if req == "alibi-explain":
            subs = [d for d in files if d.is_dir()]
            if not subs:
                raise LoadRefused(f"Failed to find alibi-explain saved folder in {folder}")
            return RuntimeChoice("mlserver_alibi_explain.AlibiExplainRuntime", subs[0], extra)
        if req == "python":
            for f in files:
                if f.suffix == ".py":
                    m = re.search(r".*class (.*)\(MLModel\):", f.read_text(errors="replace"))
                    if m:
                        return RuntimeChoice(f"{f.stem}.{m.group(1)}", f, extra)
            raise LoadRefused(
                f"Failed to find MLServer custom python class that extends MLModel file in {folder}"
            )
    raise LoadRefused(f"Can't create model-settings from requirements [{' '.join(reqs)}]")


def env_settings(path: Path, implementation: str) -> RuntimeChoice:
    """How MLServer started on a model folder with ``MLSERVER_MODEL_*`` settings in its
    environment loads it (KServe's ``kserve-mlserver``, Seldon Core 1's prepackaged servers
    with protocol ``v2``): a ``model-settings.json`` anywhere in the folder takes precedence,
    its ``name`` included (MLServer only warns that it differs from the folder's); else the
    environment's implementation, the folder as the URI.

    Args:
        path: the model's folder (or file).
        implementation: the runtime class the environment names.

    Returns:
        The choice (``served_as`` set only when a file names the model).
    """
    found = sorted(path.rglob(SETTINGS_FILE)) if path.is_dir() else []
    if found:
        return _settings_from_file(found[0], {}, implementation)
    return RuntimeChoice(implementation, path, {})


def runtime_settings(path: Path, spec: dict[str, Any]) -> RuntimeChoice:
    """The MLServer runtime a model is loaded with, as the cluster picks it:

    - KServe (``modelFormat`` and ``protocolVersion`` in ``spec``): protocol ``v2`` is
      ``kserve-mlserver``, which sets the runtime class of the format (KServe's
      ``MLServerModelClass*`` constants: the ones in
      :data:`~zenml_model_deployers.packaging.native.MLSERVER_RUNTIMES`) in MLServer's
      environment (:func:`env_settings`); ``v1`` is KServe's own server of the format, which
      finds its file in the folder by extension (here: MLServer's runtime of the format);
    - Seldon Core 1 (``implementation``, the prepackaged server's MLServer class, and
      ``protocol``): ``v2`` runs MLServer with it in the environment (:func:`env_settings`);
      ``seldon`` runs Seldon's ``SKLearnServer``, which loads ``model.joblib`` and nothing else;
    - Seldon Core 2: what its agent makes of the folder (:func:`seldon_agent_settings`).

    Args:
        path: the model's folder (or file).
        spec: the model's spec.

    Returns:
        The choice.

    Raises:
        LoadRefused: the folder cannot be loaded (the backend's words).
    """
    from zenml_model_deployers.packaging.native import MLSERVER_RUNTIMES

    fmt = spec.get("modelFormat")
    if fmt:
        if spec.get("protocolVersion") == "v2":
            return env_settings(path, MLSERVER_RUNTIMES[str(fmt)])
        return RuntimeChoice(MLSERVER_RUNTIMES[str(fmt)], path, {})
    if spec.get("implementation"):
        if spec.get("protocol") == "v2":
            return env_settings(path, str(spec["implementation"]))
        joblib_file = path / "model.joblib"
        if not joblib_file.is_file():
            # What SKLearnServer's joblib.load raises, ending its container's log.
            raise LoadRefused(f"[Errno 2] No such file or directory: '{joblib_file}'")
        return RuntimeChoice(str(spec["implementation"]), joblib_file, {})
    return seldon_agent_settings(path, spec)


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
        served_as: internal name -> the name MLServer serves it under, where a
            ``model-settings.json`` in its folder overrode the cluster's (:func:`env_settings`).
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
        self.served_as: dict[str, str] = {}
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
            (status, body); a model MLServer serves under another name (a ``model-settings.json``
            in its folder named it) is not found, in MLServer's words.
        """
        served = self.served_as.get(loaded.internal)
        if served and served != name:
            return 404, json.dumps({"error": f"Model {name} not found"}).encode()
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
        spec has them, KServe's ``modelFormat`` and ``protocolVersion``, or Core 1's
        ``implementation`` and ``protocol``) under an internal name, with the runtime
        :func:`runtime_settings` picks.

        Args:
            internal: its MLServer name.
            spec: the model's spec.

        Returns:
            "" when loaded; else the error (MLServer's own words, the refusal of what loads the
            folder into it, or a planted failure).
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
        try:
            choice = runtime_settings(path, spec)
        except LoadRefused as e:
            return str(e)
        settings = {
            "name": internal,
            "implementation": choice.implementation,
            "parameters": {"uri": str(choice.uri), "version": internal, "extra": choice.extra},
        }
        d = self._repo / internal
        d.mkdir(parents=True, exist_ok=True)
        (d / "model-settings.json").write_text(json.dumps(settings))
        r = self.request("POST", f"/v2/repository/models/{internal}/load")
        if r.status_code == 200:
            if choice.served_as:
                self.served_as[internal] = choice.served_as
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
        self.served_as.pop(internal, None)
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

"""Shared helpers of the benchmarks: an isolated ZenML environment, models, timing, tables.

Every benchmark calls :func:`isolated_env` *before* importing ZenML: it points
ZENML_CONFIG_PATH at a fresh temporary directory (the user's ~/.config/zenml is never touched),
turns analytics off, lets MLflow use a file store, and puts this venv's bin dir first on PATH
(`mlflow models serve` execs `uvicorn` by name). Everything a benchmark starts inherits that
environment, which is how :func:`end_our_processes` finds (and ends, by pid) what is left.

Each benchmark module exposes ``run() -> dict`` (a *result*: title, tables, goals, notes) and
is runnable alone; ``--json PATH`` also writes the result for ``run_all.py``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from zenml_model_deployers.local.process import terminate_all

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = REPO / ".venv" / "bin"
PYTHON = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable

_ROOT: Path | None = None


# --------------------------------------------------------------------------- environment
def isolated_env(name: str) -> Path:
    """Points ZenML (and everything started from here) at a fresh temporary directory.

    Must run before ``import zenml``. Idempotent within a process.

    Args:
        name: short benchmark name, part of the directory name.

    Returns:
        The root directory (``<root>/zenml`` is the ZenML config dir, ``<root>/work`` the cwd).
    """
    global _ROOT
    if _ROOT is not None:
        return _ROOT
    if "zenml" in sys.modules:
        raise RuntimeError("isolated_env() must run before zenml is imported")
    root = Path(tempfile.mkdtemp(prefix=f"zmd-bench-{name}-"))
    os.environ["ZENML_CONFIG_PATH"] = str(root / "zenml")
    os.environ["ZENML_ANALYTICS_OPT_IN"] = "false"
    os.environ["ZENML_LOGGING_VERBOSITY"] = "ERROR"
    os.environ["ZENML_ENABLE_RICH_TRACEBACK"] = "false"
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    os.environ["AUTO_OPEN_DASHBOARD"] = "false"
    os.environ["PYTHONWARNINGS"] = "ignore"
    os.environ["PATH"] = str(VENV_BIN) + os.pathsep + os.environ.get("PATH", "")
    (root / "work").mkdir(parents=True)
    os.chdir(root / "work")
    _ROOT = root
    return root


def end_our_processes(root: Path | None = None, timeout: float = 10.0) -> list[int]:
    """Ends every process started (directly or not) under this benchmark's isolated env.

    A process is ours when its environment's ZENML_CONFIG_PATH is our fresh temp dir (every
    child inherits it), or its command line mentions that dir. Each is ended by pid:
    SIGTERM, then SIGKILL after ``timeout``.

    Args:
        root: the isolated root (default: this process's).
        timeout: grace period in seconds.

    Returns:
        The pids that were ended.
    """
    import psutil

    root = root or _ROOT
    if root is None:
        return []
    marker = str(root)
    me = os.getpid()
    victims = []
    for p in psutil.process_iter(["pid", "cmdline", "uids"]):
        if p.pid == me:
            continue
        try:
            if p.info["uids"] is not None and p.info["uids"].real != os.getuid():
                continue
            mine = marker in " ".join(p.info["cmdline"] or [])
            if not mine:
                mine = p.environ().get("ZENML_CONFIG_PATH", "").startswith(marker)
            if mine:
                victims.append(p)
        except psutil.Error:
            continue
    terminate_all(victims, timeout)
    return [p.pid for p in victims]


def remove_root(root: Path | None = None) -> None:
    """Deletes the isolated directory (after :func:`end_our_processes`)."""
    root = root or _ROOT
    if root is not None:
        shutil.rmtree(root, ignore_errors=True)


def terminate_tree(pid: int, timeout: float = 10.0) -> None:
    """Ends a process we started and all its descendants, by pid.

    Args:
        pid: the process id.
        timeout: grace period before SIGKILL.
    """
    import psutil

    try:
        top = psutil.Process(pid)
        procs = [top, *top.children(recursive=True)]
    except psutil.Error:
        return
    terminate_all(procs, timeout)


# --------------------------------------------------------------------------- ZenML setup
def zmd_stack(name: str = "zmd-bench", flavor: str = "zmd-mlflow") -> str:
    """Registers our flavors and a stack whose model deployer is ``flavor``; activates it.

    Args:
        name: the stack's name (its model deployer is ``<name>-md``).
        flavor: one of our flavors (`zmd-mlflow`, `zmd-bentoml`).

    Returns:
        The stack name.
    """
    from zenml_model_deployers.flavors import ensure_deployer_stack

    ensure_deployer_stack(name, f"{name}-md", flavor, configuration={"default_timeout": 120})
    return name


def builtin_stack(name: str = "builtin-bench", flavor: str = "mlflow") -> str:
    """A stack with ZenML's own model deployer of ``flavor``; activates it.

    For `mlflow` the stack also gets an `mlflow` experiment tracker: the built-in MLflow
    service's daemon requires one in the active stack.

    Args:
        name: the stack's name (its components are ``<name>-md`` and ``<name>-et``).
        flavor: the built-in model deployer flavor (`mlflow`, `bentoml`).

    Returns:
        The stack name.
    """
    from zenml.client import Client
    from zenml.enums import StackComponentType

    client = Client()
    try:
        client.get_stack(name)
    except KeyError:
        components = {StackComponentType.MODEL_DEPLOYER: f"{name}-md"}
        if flavor == "mlflow":
            components[StackComponentType.EXPERIMENT_TRACKER] = f"{name}-et"
        for kind, component in components.items():
            client.create_stack_component(
                name=component, flavor=flavor, component_type=kind, configuration={}
            )
        _create_stack(client, name, components)
    client.activate_stack(name)
    return name


def _create_stack(client: Any, name: str, extra: dict[Any, str]) -> None:
    from zenml.enums import StackComponentType

    orch = client.active_stack_model.components[StackComponentType.ORCHESTRATOR][0]
    store = client.active_stack_model.components[StackComponentType.ARTIFACT_STORE][0]
    client.create_stack(
        name=name,
        components={
            StackComponentType.ORCHESTRATOR: str(orch.id),
            StackComponentType.ARTIFACT_STORE: str(store.id),
            **extra,
        },
    )


# --------------------------------------------------------------------------- models
def build_models(out: Path) -> dict[str, str]:
    """Two tiny MLflow sklearn models: `a` predicts 0, `b` predicts 1 (DummyClassifier).

    Args:
        out: directory to write them under.

    Returns:
        {"a": path, "b": path}.
    """
    import logging

    import mlflow.sklearn
    import numpy as np
    from sklearn.dummy import DummyClassifier

    logging.getLogger("mlflow.sklearn").setLevel(logging.ERROR)  # the pickle-format warning

    x = np.array([[0.0, 1.0], [1.0, 0.0]])
    paths = {}
    for variant, constant in (("a", 0), ("b", 1)):
        path = out / variant
        if not path.exists():
            clf = DummyClassifier(strategy="constant", constant=constant).fit(x, [0, 1])
            mlflow.sklearn.save_model(clf, str(path), serialization_format="pickle")
        paths[variant] = str(path)
    return paths


PREDICT_BODY = json.dumps({"inputs": [[1.0, 2.0]]}).encode()
JSON_HEADERS = {"Content-Type": "application/json"}


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_prediction(
    url: str,
    expected: Any,
    timeout: float = 120.0,
    interval: float = 0.05,
    proc: Any = None,
    body: bytes = PREDICT_BODY,
    key: str | None = "predictions",
    request_timeout: float = 5.0,
) -> float:
    """Polls POST url until it answers 200 with ``{key: expected}`` (or ``expected``).

    Args:
        url: the prediction URL (MLflow: /invocations).
        expected: the expected predictions.
        timeout: seconds (bounded loop).
        interval: seconds between attempts.
        proc: optional Popen; its exit fails the wait.
        body: the JSON request body (default: MLflow's ``{"inputs": [[1.0, 2.0]]}``).
        key: the answer's field holding the predictions; None: the whole answer.
        request_timeout: seconds per request (a cold LLM completion takes more than 5).

    Returns:
        time.perf_counter() when the first good prediction came back.
    """
    import requests

    deadline = time.monotonic() + timeout
    last = ""
    with requests.Session() as s:
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode} before serving")
            try:
                r = s.post(url, data=body, headers=JSON_HEADERS, timeout=request_timeout)
                if r.status_code == 200:
                    got = r.json()
                    if (got.get(key) if key is not None else got) == expected:
                        return time.perf_counter()
                last = f"HTTP {r.status_code}: {r.text[:200]}"
            except requests.RequestException as e:
                last = type(e).__name__
            time.sleep(interval)
    raise TimeoutError(f"no good prediction from {url} in {timeout:.0f} s ({last})")


def start_logged(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    """Starts argv in its own session with this environment, output appended to ``log``.

    Args:
        argv: the command line.
        log: where its stdout and stderr go.

    Returns:
        The process (end it with :func:`terminate_tree`).
    """
    env = dict(os.environ)
    env.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    with open(log, "ab") as f:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=f,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


def start_raw_server(model_dir: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    """`python -m mlflow models serve -m DIR --env-manager local` on 127.0.0.1:port."""
    return start_logged(
        [
            PYTHON,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            model_dir,
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        log,
    )


# --------------------------------------------------------------------------- statistics
def median(values: Iterable[float]) -> float:
    """The median (NaN for no values)."""
    v = list(values)
    return statistics.median(v) if v else math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), nearest-rank on sorted values."""
    if not values:
        return math.nan
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))
    return s[k]


def timed_calls(fn: Callable[[], Any], n: int) -> list[float]:
    """Latency in seconds of each of n calls of fn."""
    out = []
    pc = time.perf_counter
    for _ in range(n):
        t = pc()
        fn()
        out.append(pc() - t)
    return out


def throughput(fn: Callable[[], Any], n: int, max_seconds: float = 120.0) -> float:
    """Requests per second of n sequential calls of fn (fewer if ``max_seconds`` runs out).

    Args:
        fn: one request.
        n: how many calls.
        max_seconds: the loop stops after this long; the rate counts the calls made.

    Returns:
        Calls per second.
    """
    pc = time.perf_counter
    t0 = pc()
    deadline = t0 + max_seconds
    done = 0
    while done < n:
        fn()
        done += 1
        if pc() > deadline:
            break
    return done / (pc() - t0)


def fmt_s(x: float) -> str:
    """Seconds with 2 decimals (or n/a)."""
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f} s"


def fmt_ms(x: float, digits: int = 3) -> str:
    """Seconds shown as milliseconds."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x * 1000:.{digits}f} ms"


def fmt_ratio(x: float | None) -> str:
    """A ratio like 1.07x (or n/a)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.2f}x"


# --------------------------------------------------------------------------- results
def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(str(h) for h in headers) + " |"]
    lines.append("|" + "|".join("---" for _ in headers) + "|")
    for r in rows:
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |")
    return "\n".join(lines)


def result_markdown(result: dict[str, Any], level: int = 2) -> str:
    """Markdown of one benchmark result (title, method, tables, goals, notes)."""
    h = "#" * level
    out = [f"{h} {result['title']}", ""]
    if result.get("method"):
        out += [result["method"], ""]
    for t in result.get("tables", []):
        if t.get("caption"):
            out += [f"**{t['caption']}**", ""]
        out += [md_table(t["headers"], t["rows"]), ""]
    if result.get("goals"):
        out += [
            md_table(
                ["goal", "measured", "met"],
                [[g["goal"], g["value"], _met(g["met"])] for g in result["goals"]],
            ),
            "",
        ]
    for n in result.get("notes", []):
        out.append(f"- {n}")
    if result.get("notes"):
        out.append("")
    return "\n".join(out)


def _met(m: bool | None) -> str:
    return "n/a" if m is None else ("yes" if m else "**no**")


def main_for(name: str, run: Callable[[], dict[str, Any]]) -> None:
    """The ``__main__`` of a benchmark: runs it, prints its markdown, writes --json.

    The isolated environment is always cleaned up (processes ended by pid, temp dir removed).
    """
    p = argparse.ArgumentParser(description=f"benchmark: {name}")
    p.add_argument("--json", help="also write the result as JSON to this path")
    args = p.parse_args()
    root = isolated_env(name)
    started = time.monotonic()
    try:
        result = run()
    finally:
        left = end_our_processes(root)
        if left:
            print(f"[cleanup] ended leftover processes: {left}", file=sys.stderr)
        os.chdir(REPO)
        remove_root(root)
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    print(result_markdown(result))
    print(f"({name}: {result['elapsed_s']} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))

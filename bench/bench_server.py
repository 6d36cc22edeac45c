"""The CLI on a ZenML server (REST store): `zmd models list|describe|get-url` vs ZenML's.

A real local ZenML server is started in the isolated environment (`zenml login --local
--blocking`, its own config dir; ended by pid), the benchmark's client config is connected to
it, and 20 `zmd-mlflow` service rows are written through it (stopped deployments, as
``bench_list`` writes them; 20 = ZenML's default page, so both CLIs list every row). Then, as
subprocesses, median of 3 after one untimed warm-up run, interleaved:

- ``zmd models list`` / ``describe NAME`` / ``get-url NAME`` as shipped (the fast path: one
  REST request with the client's stored credentials, no ZenML import), and with
  ``ZMD_FAST_LIST=0`` (ZenML's client path); outputs compared;
- ``zenml model-deployer models list`` / ``describe <id>`` / ``get-url <id>``.

Goal (issue 8): `zmd models list` <= 1/3 of `zenml model-deployer models list` on the server.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as c  # noqa: E402
from bench_read import REPEATS, measure  # noqa: E402

ROWS = 20
SERVER_TIMEOUT = 300
TARGET = "bench-list-007"


def _start_server(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    import requests

    port = c.free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "ZENML_CONFIG_PATH": str(root / "zenml-server")}
    log = root / "zenml-server.log"
    with open(log, "ab") as out:
        popen = subprocess.Popen(
            [str(c.VENV_BIN / "zenml"), "login", "--local", "--blocking", "--port", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    deadline = time.monotonic() + SERVER_TIMEOUT
    while True:
        if popen.poll() is not None:
            raise RuntimeError(f"the ZenML server exited: {log.read_text()[-2000:]}")
        try:
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                return popen, url
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the ZenML server did not start: {log.read_text()[-2000:]}")
        time.sleep(0.5)


def run() -> dict[str, Any]:
    """Runs the benchmark (inside an isolated env) and returns its result."""
    root = c.isolated_env("server")
    t = time.perf_counter()
    popen, url = _start_server(root)
    start_s = time.perf_counter() - t
    print(f"  ZenML server up in {start_s:.1f} s at {url}", file=sys.stderr, flush=True)
    try:
        return _measure(url, start_s)
    finally:
        c.terminate_tree(popen.pid, 20)


def _measure(url: str, start_s: float) -> dict[str, Any]:
    from zenml.config.global_config import GlobalConfiguration
    from zenml.zen_stores.rest_zen_store import RestZenStoreConfiguration

    GlobalConfiguration().set_store(RestZenStoreConfiguration(url=url))
    c.zmd_stack()
    from bench_list import _create_zmd_rows
    from zenml.client import Client

    ids = _create_zmd_rows(ROWS)
    sid = str(next(i for i in ids if Client().get_service(i).name == f"zenml-{TARGET}"))

    commands = {
        "list": (["models", "list"], ["model-deployer", "models", "list"]),
        "describe": (["models", "describe", TARGET], ["model-deployer", "models", "describe", sid]),
        "get-url": (["models", "get-url", TARGET], ["model-deployer", "models", "get-url", sid]),
    }
    med, same, outputs, rows = measure(commands)
    shown = {k: sum(1 for ln in out.splitlines() if "zmd-mlfl" in ln) for k, out in outputs.items()}
    goals = [
        {
            "goal": f"`zmd models {cmd}`: same output with and without the fast path",
            "value": "same" if same[cmd] else "different",
            "met": same[cmd],
        }
        for cmd in commands
    ]
    ours, theirs = med["list:zmd"], med["list:zenml"]
    goals.insert(
        0,
        {
            "goal": "`zmd models list` <= 1/3 of `zenml model-deployer models list` on a server",
            "value": f"{ours / theirs:.2f}x ({ours:.2f} s vs {theirs:.2f} s; rows shown "
            f"{shown['list:zmd']} vs {shown['list:zenml']})",
            "met": ours <= theirs / 3,
        },
    )
    return {
        "name": "server",
        "title": "On a ZenML server: `zmd models list|describe|get-url` vs ZenML's",
        "method": (
            f"A local ZenML server (`zenml login --local --blocking`, SQLite behind it; up in "
            f"{start_s:.0f} s), the client connected to it with a REST store; {ROWS} "
            f"`zmd-mlflow` service rows (stopped deployments) written through it. The commands "
            f"read `{TARGET}` (zmd by name, ZenML by service id). Each command runs as a "
            f"subprocess; median of {REPEATS} after one untimed warm-up run, interleaved."
        ),
        "tables": [{"headers": ["command", "runs (s)", "median"], "rows": rows}],
        "goals": goals,
        "notes": [
            "The fast path reads the server's service list with one REST request per page "
            "(1,000 rows) with the token ZenML's client stored in `credentials.yaml` (none for a "
            "local server, whose auth scheme is NO_AUTH), without importing ZenML; a refused "
            "request (expired token, unknown API) takes ZenML's client path.",
        ],
    }


if __name__ == "__main__":
    c.main_for("server", run)

"""`zmd-local` with a ZenML server (REST) store: `zenml login --local` starts ZenML's local
server on 127.0.0.1, and everything else goes through it as a user's commands do (register the
flavor, the deployer and a stack, `zenml pipeline deploy`, invoke, kill -9 the pipeline server,
delete). What differs from a SQL store: ZenML hands the deployer the server's URL for the
pipeline server, which loads its deployment and snapshot over REST, at its start and at a
restart by the supervisor. ZenML's local server runs without authentication (NO_AUTH), so no
API token is handed over here; that a token handed over as a secret stays out of the restart
spec and argv is test_pipeline_deployer.py's last test.

Opt-in (`ZMD_TEST_REST_STORE=1`): the local ZenML server alone takes ~50 s to start on a loaded
2-core machine, and the test ~2-3 min in all, over the suite's budget for one test.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("ZMD_TEST_REST_STORE") != "1",
        reason="opt-in: ZMD_TEST_REST_STORE=1 (starts a local ZenML server, ~2-3 min)",
    ),
]

NAME = "rdemo"
PIPELINE = """
from zenml import pipeline, step


@step
def answer(x: int) -> str:
    return "rest-v1:" + str(x)


@pipeline
def demo(x: int = 1) -> str:
    return answer(x)
"""
# What the deployment's record says, read through the REST store by a fresh process.
READ = """
import json
from zenml.client import Client
c = Client()
d = c.get_deployment("{name}")
print(json.dumps({{"url": d.url, "meta": d.deployment_metadata, "status": str(d.status),
                   "store": c.zen_store.type.value}}))
"""


def _run(env: dict[str, str], cwd: Path, *argv: str, timeout: float = 300) -> str:
    res = subprocess.run(
        list(argv), env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    assert res.returncode == 0, f"{' '.join(argv)}:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res.stdout


def _record(env: dict[str, str], cwd: Path) -> dict[str, Any]:
    out = _run(env, cwd, "python", "-c", READ.format(name=NAME), timeout=120)
    return dict(json.loads(out.strip().splitlines()[-1]))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ours(config_path: str) -> list[psutil.Process]:
    """Processes started with this ZenML config (the local ZenML server daemon included)."""
    found = []
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if p.environ().get("ZENML_CONFIG_PATH") == config_path and p.pid != os.getpid():
                found.append(p)
    return found


def test_deploy_invoke_heal_delete_through_a_zenml_server(fresh_configs: Any) -> None:
    env, work = fresh_configs.new("rest")
    config_path = env["ZENML_CONFIG_PATH"]
    (work / "pl.py").write_text(PIPELINE, encoding="utf-8")
    try:
        _run(env, work, "zenml", "login", "--local", "--port", str(_free_port()), timeout=300)
        _run(env, work, "zmd", "flavors", "register")
        _run(env, work, "zenml", "deployer", "register", "local-zmd", "--flavor=zmd-local")
        _run(
            env, work, "zenml", "stack", "register", "rest-pipelines",
            "-o", "default", "-a", "default", "-D", "local-zmd", "--set",
        )  # fmt: skip
        _run(env, work, "zenml", "pipeline", "deploy", "pl.demo", "-n", NAME)
        rec = _record(env, work)
        assert rec["store"] == "rest" and rec["status"].endswith("running")
        url, meta = rec["url"], rec["meta"]
        r = requests.post(f"{url}/invoke", json={"parameters": {"x": 3}}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["outputs"]["output"] == "rest-v1:3"

        # The pipeline server reads the store over REST (ZenML's variables, handed over).
        server = psutil.Process(meta["server_pid"])
        assert server.environ().get("ZENML_STORE_URL", "").startswith("http://127.0.0.1:")
        workdir = Path(meta["log_file"]).parent

        # kill -9: the supervisor restarts it with ZenML's variables, and it loads its
        # deployment and snapshot over REST again.
        os.kill(meta["server_pid"], signal.SIGKILL)
        t0 = time.monotonic()
        answer = None
        while time.monotonic() - t0 < 180 and answer is None:
            with contextlib.suppress(requests.RequestException):
                r = requests.post(f"{url}/invoke", json={"parameters": {"x": 4}}, timeout=60)
                if r.status_code == 200:
                    answer = r.json()["outputs"]["output"]
            time.sleep(0.3)
        assert answer == "rest-v1:4", f"no answer {time.monotonic() - t0:.0f} s after kill -9"

        _run(env, work, "zenml", "deployment", "delete", NAME, "-y")
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{url}/health", timeout=5)
        assert not workdir.exists()
    finally:
        with contextlib.suppress(Exception):
            subprocess.run(
                ["zenml", "logout", "--local"], env=env, cwd=work, timeout=120, capture_output=True
            )
        from zenml_model_deployers.local.process import terminate_all

        terminate_all(_ours(config_path), 10)

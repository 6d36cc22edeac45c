"""`zmd-mlflow` with ``data_path="direct"``: the serving revision's uvicorn (2 workers) accepts
on the front's listening socket itself; the relay stands in the data path only while a revision
is switched. One deployment goes through the tests in order (real MLflow servers, 127.0.0.1)."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import psutil
import pytest
import requests

from zenml_model_deployers.errors import ConfigurationError, DeploymentError
from zenml_model_deployers.flavors.mlflow.config import MLflowDeploymentConfig
from zenml_model_deployers.local.fastlist import local_rows, row_stats
from zenml_model_deployers.local.launch import handoff_socket
from zenml_model_deployers.testing.request_loop import RequestLoop

NAME = "direct-path"
BODY = b'{"inputs": [[1.0, 2.0]]}'
HEADERS = {"Content-Type": "application/json"}


def _cfg(models_dir: Path, variant: str, **kw: Any) -> MLflowDeploymentConfig:
    return MLflowDeploymentConfig(
        deployment_name=NAME, model_uri=str(models_dir / variant), data_path="direct", **kw
    )


def _relay(svc: Any) -> dict[str, Any]:
    return dict(svc.front.call({"cmd": "status"}))


def _listeners(pid: int, port: int) -> set[int]:
    """Processes of `pid`'s tree listening on `port` (the inherited public socket)."""
    root = psutil.Process(pid)
    out = set()
    for p in [root, *root.children(recursive=True)]:
        for c in p.net_connections("tcp"):
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port:
                out.add(p.pid)
    return out


@pytest.fixture(scope="module")
def direct(mlflow_deployer: Any, models_dir: Path) -> Any:
    # 2 workers first (each gets a copy of the socket), 1 after the update.
    svc = mlflow_deployer.deploy(_cfg(models_dir, "a", workers=2), timeout=180)
    yield svc
    live = mlflow_deployer.find_deployment(NAME)
    if live is not None:
        mlflow_deployer.delete(live)


def test_refusals_before_anything_changes(mlflow_deployer: Any, models_dir: Path) -> None:
    with pytest.raises(ConfigurationError, match="api_key"):
        _cfg(models_dir, "a", api_key="{{direct-key.api_key}}")
    for kw in ({"canary_percent": 10}, {"policy": "canary"}):
        with pytest.raises(ConfigurationError, match="canary"):
            mlflow_deployer.deploy(_cfg(models_dir, "b"), timeout=60, **kw)
    assert mlflow_deployer.find_deployment(NAME) is None
    # data_path is part of the revision (a change is an update); the default keeps old hashes.
    relay = MLflowDeploymentConfig(deployment_name=NAME, model_uri=str(models_dir / "a"))
    assert "data_path" not in relay.serving_fields()
    assert relay.config_hash() != relay.model_copy(update={"data_path": "direct"}).config_hash()


def test_direct_serves_without_the_relay(direct: Any) -> None:
    port = direct.status.public_port
    assert direct.status.direct and direct.status.server_port is not None
    assert direct.predict([[1.0, 2.0]]) == [0]
    assert _relay(direct)["accepting"] is False
    # The serving server's workers accept on the public port themselves (and on their
    # private port, where they were checked and where the relay forwards when it steps in).
    assert len(_listeners(direct.status.server.pid, port)) >= 2
    assert len(_listeners(direct.status.server.pid, direct.status.server_port)) >= 2


def _count(svc: Any) -> tuple[int, int]:
    """(requests, 5xx) of the serving revision since the front started."""
    m = svc.read_revision_metrics()[svc.config.config_hash()]
    return m.requests, m.errors_by_kind.get("5xx", 0)


def test_direct_server_counts_its_requests_across_workers(direct: Any) -> None:
    """The server's 2 workers count in the revision's multiprocess folder; the front's metrics
    port, read_revision_metrics and --stats show them (exact counts)."""
    rev = direct.config.config_hash()
    folder = direct.workdir / "metrics" / rev
    # A first start is ready once the URL answers; its second worker may still be importing
    # MLflow. Each worker makes its counter file as it loads the app: wait for both (bounded).
    deadline = time.monotonic() + 60
    while len(list(folder.glob("counter_*.db"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    before = _count(direct)
    url = direct.prediction_url
    with ThreadPoolExecutor(4) as pool:  # fresh connections: both workers accept some
        codes = list(
            pool.map(
                lambda _: requests.post(url, data=BODY, headers=HEADERS).status_code, range(24)
            )
        )
        codes += list(
            pool.map(lambda _: requests.post(url, data=b"{", headers=HEADERS).status_code, range(3))
        )
    assert codes.count(200) == 24 and len([c for c in codes if c >= 400]) == 3
    after = _count(direct)
    assert after[0] - before[0] == 27
    files = list(folder.glob("counter_*.db"))
    assert len(files) == 2  # one per worker
    text = requests.get(direct.metrics_url, timeout=5).text
    line = next(
        x for x in text.splitlines() if x.startswith("zmd_relay_requests_total") and rev in x
    )
    assert float(line.rsplit(" ", 1)[1]) >= after[0]
    row = next(r for r in local_rows() or [] if r["name"] == NAME)
    stats = row_stats(row)
    assert isinstance(stats, dict) and stats[rev]["requests"] >= 27


def test_canary_on_a_direct_deployment_is_refused(
    mlflow_deployer: Any, direct: Any, models_dir: Path
) -> None:
    relay_b = MLflowDeploymentConfig(deployment_name=NAME, model_uri=str(models_dir / "b"))
    with pytest.raises(ConfigurationError, match="direct data path"):
        mlflow_deployer.deploy(relay_b, timeout=60, canary_percent=10)
    svc = mlflow_deployer.find_deployment(NAME)
    assert svc.status.canary_server is None and svc.predict([[1.0, 2.0]]) == [0]


def test_update_under_a_looping_client_loses_no_request(
    mlflow_deployer: Any, direct: Any, models_dir: Path
) -> None:
    url = direct.prediction_url
    old = direct.status.server.pid
    with RequestLoop(url, BODY, HEADERS, max_seconds=240) as loop:
        time.sleep(0.5)
        svc = mlflow_deployer.deploy(_cfg(models_dir, "b", workers=1), timeout=180)
        time.sleep(0.5)
    assert loop.failures == [], loop.failures[:5]
    assert loop.ok > 20
    assert {"predictions": [0]} in loop.answers and loop.answers[-1] == {"predictions": [1]}
    assert svc.prediction_url == url and svc.status.direct
    assert not psutil.pid_exists(old) or psutil.Process(old).status() == psutil.STATUS_ZOMBIE
    relay = _relay(svc)
    assert relay["accepting"] is False and relay["connections"] == {}
    # Each revision's series: a's folded into the front's own counters (its folder gone), b's
    # counted by the new server.
    metrics = svc.read_revision_metrics()
    old_rev, new_rev = direct.config.config_hash(), svc.config.config_hash()
    assert metrics[old_rev].requests >= 27 and metrics[new_rev].requests > 0
    assert metrics[old_rev].requests + metrics[new_rev].requests >= loop.ok
    assert [p.name for p in (svc.workdir / "metrics").iterdir()] == [new_rev]
    assert _listeners(svc.status.server.pid, svc.status.public_port) == {svc.status.server.pid}


def test_a_retired_server_answers_a_kept_alive_connections_next_request(
    mlflow_deployer: Any, direct: Any, models_dir: Path
) -> None:
    """uvicorn alone closes idle kept-alive connections as it shuts down: a request sent on one
    meanwhile was lost (CI, once, under the looping client). The retiring server answers it,
    with ``Connection: close``, and the connection then ends (local/drain.py)."""
    svc = mlflow_deployer.find_deployment(NAME)
    old_log = Path(svc.status.log_path)
    retired_before = old_log.read_text().count("Shutting down")
    client = http.client.HTTPConnection("127.0.0.1", svc.status.public_port, timeout=30)
    path = urlparse(svc.prediction_url).path

    def post() -> tuple[http.client.HTTPResponse, Any]:
        client.request("POST", path, body=BODY, headers=HEADERS)
        resp = client.getresponse()
        return resp, json.loads(resp.read())

    answers = []
    try:
        first, _ = post()
        assert first.status == 200 and first.getheader("connection") is None
        sock = client.sock
        with ThreadPoolExecutor(1) as pool:
            update = pool.submit(
                mlflow_deployer.deploy, _cfg(models_dir, "b", workers=2), timeout=180
            )
            deadline, last = time.monotonic() + 150, time.monotonic()
            while old_log.read_text().count("Shutting down") == retired_before:
                assert time.monotonic() < deadline and not update.done(), "never retired"
                if time.monotonic() - last > 0.5:
                    # A request every 0.5 s while the new revision starts: uvicorn closes a
                    # connection idle for 5 s (CI: the new server took longer than that).
                    resp, answer = post()
                    answers.append((resp.status, resp.getheader("connection"), answer))
                    last = time.monotonic()
                    if resp.getheader("connection") == "close":
                        break  # the retirement began while it was answered (uvicorn's own path)
                time.sleep(0.02)
            if not answers or answers[-1][1] != "close":
                # Idle when the retirement began. uvicorn alone has closed it by now; sent at once,
                # well inside the grace, on the same connection (http.client reconnects only
                # after an answer that said it closes).
                assert client.sock is sock
                resp, answer = post()
                answers.append((resp.status, resp.getheader("connection"), answer))
            svc = update.result()
    finally:
        client.close()
    assert answers[-1] == (200, "close", {"predictions": [1]})
    assert all(a == (200, None, {"predictions": [1]}) for a in answers[:-1]), answers
    assert svc.predict([[1.0, 2.0]]) == [1] and svc.status.direct


def test_killed_server_heals_and_waiting_requests_are_served(
    mlflow_deployer: Any, direct: Any
) -> None:
    svc = mlflow_deployer.find_deployment(NAME)
    url, pid = svc.prediction_url, svc.status.server.pid
    tree = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    for p in tree:
        os.kill(p.pid, signal.SIGKILL)
    psutil.wait_procs(tree, timeout=10)
    # Nobody accepts on the socket until the front restarted the server: the request waits
    # in the socket's backlog instead of being refused.
    r = requests.post(url, data=BODY, headers=HEADERS, timeout=120)
    assert r.status_code == 200 and r.json() == {"predictions": [1]}
    # The first new worker to accept serves it; the front records the restart once the whole
    # server is ready (CI once read the record while it still said "starting").
    deadline = time.monotonic() + 60
    healed = mlflow_deployer.find_deployment(NAME)
    while (healed.status.restarts, healed.status.state.value) != (1, "active") and (
        time.monotonic() < deadline
    ):
        time.sleep(0.2)
        healed = mlflow_deployer.find_deployment(NAME)
    assert healed.status.restarts == 1 and healed.status.server.pid != pid
    assert healed.status.state.value == "active"
    assert _relay(healed)["accepting"] is False


def test_stop_start_delete(mlflow_deployer: Any, direct: Any) -> None:
    svc = mlflow_deployer.find_deployment(NAME)
    url, port = svc.prediction_url, svc.status.public_port
    svc = mlflow_deployer.stop(svc)
    assert not (svc.workdir / "metrics").exists()
    with pytest.raises(requests.ConnectionError):
        requests.post(url, data=BODY, headers=HEADERS, timeout=5)
    svc = mlflow_deployer.start(svc, timeout=180)
    assert svc.prediction_url == url and svc.status.direct
    assert svc.predict([[1.0, 2.0]]) == [1]
    assert _listeners(svc.status.server.pid, port)
    pids = [svc.status.server.pid, svc.status.relay.pid]
    mlflow_deployer.delete(svc)
    assert mlflow_deployer.find_deployment(NAME) is None
    assert not (svc.workdir / "metrics").exists()
    psutil.wait_procs([psutil.Process(p) for p in pids if psutil.pid_exists(p)], timeout=10)
    assert not any(psutil.pid_exists(p) for p in pids)
    with pytest.raises(requests.ConnectionError):
        requests.post(url, data=BODY, headers=HEADERS, timeout=5)


METERED_DRIVER = """
import asyncio, sys
from zenml_model_deployers.local.metering import Metered

async def app(scope, receive, send):
    path = scope["path"]
    if path == "/boom":
        raise RuntimeError("boom")
    if path == "/gone":
        await receive()
        return
    if path == "/gone-reading":
        await receive()
        raise OSError("client disconnected")
    status = 503 if path == "/busy" else 200
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})

async def main():
    m = Metered(app, "dep", "rev1")
    async def receive():
        return {"type": "http.disconnect"}
    async def send(msg):
        pass
    for path in ["/ok"] * 5 + ["/busy"] * 2 + ["/boom", "/gone", "/gone-reading"]:
        try:
            await m({"type": "http", "path": path}, receive, send)
        except (RuntimeError, OSError):
            pass

asyncio.run(main())
"""


def test_metered_counts_answers_5xx_and_abandoned(tmp_path: Path) -> None:
    """The middleware's counts as the front reads them from the multiprocess folder."""
    import subprocess
    import sys

    from zenml_model_deployers.local.relay_metrics import read_multiproc

    folder = tmp_path / "metrics" / "rev1"
    folder.mkdir(parents=True)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)}
    subprocess.run([sys.executable, "-c", METERED_DRIVER], env=env, check=True, timeout=60)
    got = read_multiproc(tmp_path / "metrics")["rev1"]
    assert got["requests"] == 8  # 5 ok, 2 answered 503, 1 raised (uvicorn answers 500)
    # The client gone before any answer: abandoned, not a 5xx, whether the app raised or not.
    assert got["errors"]["5xx"] == 3 and got["errors"]["abandoned"] == 2
    assert got["buckets"][-1] == 8 and got["latency_sum"] > 0


def test_a_long_deployment_folder_gets_its_handoff_socket_in_a_private_folder(
    mlflow_deployer: Any, models_dir: Path
) -> None:
    # A Unix socket's path is at most 108 bytes: a long name under a deep ZenML config folder
    # (here the test's) used to fail every deploy with "AF_UNIX path too long".
    name = "a-deployment-name-long-enough-to-overflow-a-unix-socket-path"
    cfg = MLflowDeploymentConfig(
        deployment_name=name, model_uri=str(models_dir / "a"), data_path="direct"
    )
    svc = mlflow_deployer.deploy(cfg, timeout=180)
    try:
        sock = handoff_socket(svc.workdir)
        assert len(str(svc.workdir / "front.sock")) > 108 and sock.parent != svc.workdir
        assert sock.exists() and sock.parent.stat().st_mode & 0o777 == 0o700
        assert svc.status.direct and svc.predict([[1.0, 2.0]]) == [0]
        assert _listeners(svc.status.server.pid, svc.status.public_port)
    finally:
        mlflow_deployer.delete(svc)
    assert not sock.exists()


def test_the_handoff_socket_folder_must_be_the_users_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    short = tmp_path / "dep"
    assert handoff_socket(short) == short / "front.sock"
    deep = tmp_path / ("d" * 120)
    # A short runtime folder (pytest's tmp_path may itself be too long for one: then the
    # socket goes to <tmp>/zmd-<uid>, which this test must not change the mode of).
    run = Path(tempfile.mkdtemp(prefix="zmd-run-", dir="/tmp"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    sock = handoff_socket(deep)
    assert sock.parent == run / "zmd" and len(str(sock)) <= 100
    assert handoff_socket(deep) == sock != handoff_socket(tmp_path / ("e" * 120))
    sock.parent.chmod(0o755)  # someone else could reach it: refused, not used
    with pytest.raises(DeploymentError, match="0700"):
        handoff_socket(deep)
    shutil.rmtree(run)

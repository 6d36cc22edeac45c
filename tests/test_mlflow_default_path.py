"""`zmd-mlflow` deployed with the defaults (``data_path="auto"``): the direct data path, with
the relay stepping into the data path by itself for a canary or an API key and out again
after. One deployment goes through the tests in order (real MLflow servers, 127.0.0.1)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
from click.testing import CliRunner
from zenml.client import Client

from zenml_model_deployers.cli import main as zmd
from zenml_model_deployers.flavors.mlflow.config import MLflowDeploymentConfig
from zenml_model_deployers.local import gate
from zenml_model_deployers.testing.request_loop import RequestLoop

NAME = "default-path"
BODY = b'{"inputs": [[1.0, 2.0]]}'
HEADERS = {"Content-Type": "application/json"}
KEY = "default-path-key-3f9c2a"
REF = "{{zmd-default-key.api_key}}"


def _cfg(models_dir: Path, variant: str, **kw: Any) -> MLflowDeploymentConfig:
    return MLflowDeploymentConfig(deployment_name=NAME, model_uri=str(models_dir / variant), **kw)


def _accepting(svc: Any) -> bool:
    return bool(svc.front.call({"cmd": "status"})["accepting"])


def _gone(pid: int) -> bool:
    return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


@pytest.fixture(scope="module")
def default(mlflow_deployer: Any, models_dir: Path) -> Any:
    Client().create_secret(name="zmd-default-key", values={"api_key": KEY})
    svc = mlflow_deployer.deploy(_cfg(models_dir, "a"), timeout=180)
    yield svc
    live = mlflow_deployer.find_deployment(NAME)
    if live is not None:
        mlflow_deployer.delete(live)
    Client().delete_secret("zmd-default-key")


def test_the_default_is_the_direct_data_path(default: Any, models_dir: Path) -> None:
    assert default.config.data_path == "auto"
    assert default.status.direct and default.status.server_port is not None
    assert not _accepting(default)  # the server accepts on the URL's socket, not the relay
    # One server started: checked on its private port, then it opened its gate.
    assert len(list(default.workdir.glob("server-*.log"))) == 1
    assert default.predict([[1.0, 2.0]]) == [0]
    # The default hashes as the former default: deployments made before keep their revision.
    cfg = _cfg(models_dir, "a")
    assert "data_path" not in cfg.serving_fields()
    assert cfg.config_hash() == cfg.model_copy(update={"data_path": "relay"}).config_hash()


def test_a_canary_steps_the_relay_in_and_its_promotion_out(
    mlflow_deployer: Any, default: Any, models_dir: Path
) -> None:
    """Under a looping client: the relay steps in (the serving server closes its gate and
    serves the relay on its private port: nothing starts but the candidate), splits 50/50 and
    counts per revision; the promotion hands the socket to the candidate's server (it opens
    its gate). No request fails throughout."""
    url, direct_pid = default.prediction_url, default.status.server.pid
    b = _cfg(models_dir, "b")
    with RequestLoop(url, BODY, HEADERS, max_seconds=300) as loop:
        time.sleep(0.5)
        svc = mlflow_deployer.deploy(b, timeout=180, canary_percent=50)
        assert not svc.status.direct and _accepting(svc)
        assert svc.status.server_port is not None and svc.status.canary_port is not None
        assert svc.status.server.pid == direct_pid  # the same server, behind the relay
        candidate_pid = svc.status.canary_server.pid
        answers = {tuple(svc.predict([[1.0, 2.0]])) for _ in range(8)}
        assert answers == {(0,), (1,)}
        metrics = svc.read_revision_metrics()
        assert metrics[default.config.config_hash()].requests > 0
        assert metrics[b.config_hash()].requests > 0
        svc = mlflow_deployer.promote(svc)
        time.sleep(0.5)
        assert _gone(direct_pid) and svc.status.server.pid == candidate_pid
    assert loop.failures == [], loop.failures[:5]
    assert loop.ok > 20 and loop.answers[-1] == {"predictions": [1]}
    assert svc.status.direct and not _accepting(svc) and svc.status.canary_server is None
    assert svc.prediction_url == url and svc.config.config_hash() == b.config_hash()


def test_an_api_key_puts_the_relay_in_the_path_and_its_removal_takes_it_out(
    mlflow_deployer: Any, default: Any, models_dir: Path
) -> None:
    keyed = mlflow_deployer.deploy(_cfg(models_dir, "a", api_key=REF), timeout=180)
    url = keyed.prediction_url
    assert not keyed.status.direct and _accepting(keyed)
    assert requests.post(url, data=BODY, headers=HEADERS, timeout=30).status_code == 401
    auth = {**HEADERS, "Authorization": f"Bearer {KEY}"}
    assert requests.post(url, data=BODY, headers=auth, timeout=30).json() == {"predictions": [0]}
    plain = mlflow_deployer.deploy(_cfg(models_dir, "a"), timeout=180)
    assert plain.status.direct and not _accepting(plain) and plain.prediction_url == url
    assert requests.post(url, data=BODY, headers=HEADERS, timeout=30).json() == {"predictions": [0]}


def test_a_rollback_steps_the_relay_out_too(
    mlflow_deployer: Any, default: Any, models_dir: Path
) -> None:
    svc = mlflow_deployer.deploy(_cfg(models_dir, "b"), timeout=180, canary_percent=10)
    assert not svc.status.direct and svc.status.canary_server is not None
    svc = mlflow_deployer.rollback(svc)
    assert svc.status.direct and not _accepting(svc) and svc.status.canary_server is None
    assert svc.predict([[1.0, 2.0]]) == [0]


def _opened(svc: Any) -> int:
    return Path(str(svc.status.log_path)).read_text(errors="replace").count(gate.OPENED)


def test_an_update_starts_the_new_server_once_and_loses_no_request(
    mlflow_deployer: Any, default: Any, models_dir: Path
) -> None:
    """The new revision's server is checked on its private port and then takes the public
    socket at its gate: one start per update (issue 28: no second server on the socket)."""
    svc = mlflow_deployer.find_deployment(NAME)
    url, old_pid = svc.prediction_url, svc.status.server.pid
    logs = set(svc.workdir.glob("server-*.log"))
    with RequestLoop(url, BODY, HEADERS, max_seconds=300) as loop:
        time.sleep(0.5)
        new = mlflow_deployer.deploy(_cfg(models_dir, "b"), timeout=180)
        time.sleep(0.5)
    assert loop.failures == [], loop.failures[:5]
    assert loop.ok > 10 and loop.answers[-1] == {"predictions": [1]}
    assert len(set(new.workdir.glob("server-*.log")) - logs) == 1
    assert new.status.direct and not _accepting(new) and _gone(old_pid)
    assert _opened(new) == new.config.workers  # each worker once
    # It counts what it takes on the public socket (the relay counted none of those).
    before = new.read_revision_metrics()[new.config.config_hash()].requests
    for _ in range(5):
        requests.post(url, data=BODY, headers=HEADERS, timeout=30)
    after = new.read_revision_metrics()[new.config.config_hash()].requests
    assert after == before + 5


def test_a_killed_server_heals_on_the_direct_data_path(mlflow_deployer: Any, default: Any) -> None:
    svc = mlflow_deployer.find_deployment(NAME)
    pid = svc.status.server.pid
    psutil.Process(pid).kill()
    deadline = time.monotonic() + 120
    while (again := mlflow_deployer.find_deployment(NAME)).status.restarts != 1:
        assert time.monotonic() < deadline, again.status
        time.sleep(0.2)
    # Requests sent meanwhile wait in the socket's backlog; the restarted server opens its
    # gate by itself (the revision was verified when it was deployed).
    r = requests.post(again.prediction_url, data=BODY, headers=HEADERS, timeout=60)
    assert r.json() == {"predictions": [1]}
    assert again.status.direct and not _accepting(again) and again.status.server.pid != pid


def test_a_start_after_a_killed_front_serves_on_the_same_url(
    mlflow_deployer: Any, default: Any
) -> None:
    """The server of the direct data path holds the public socket when its front is killed:
    `zmd models start` ends it and starts both again on the same URL (the port released)."""
    svc = mlflow_deployer.find_deployment(NAME)
    url = svc.prediction_url
    psutil.Process(svc.status.relay.pid).kill()
    psutil.wait_procs([psutil.Process(svc.status.relay.pid)], timeout=10)
    res = CliRunner().invoke(zmd, ["models", "start", NAME])
    assert res.exit_code == 0, res.output
    back = mlflow_deployer.find_deployment(NAME)
    assert back.prediction_url == url and back.status.direct and not _accepting(back)
    assert requests.post(url, data=BODY, headers=HEADERS, timeout=30).json() == {"predictions": [1]}

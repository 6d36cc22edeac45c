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
from zenml.client import Client

from zenml_model_deployers.flavors.mlflow.config import MLflowDeploymentConfig
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
    assert default.status.direct and default.status.server_port is None
    assert not _accepting(default)  # the server accepts on the URL's socket, not the relay
    assert default.predict([[1.0, 2.0]]) == [0]
    # The default hashes as the former default: deployments made before keep their revision.
    cfg = _cfg(models_dir, "a")
    assert "data_path" not in cfg.serving_fields()
    assert cfg.config_hash() == cfg.model_copy(update={"data_path": "relay"}).config_hash()


def test_a_canary_steps_the_relay_in_and_its_promotion_out(
    mlflow_deployer: Any, default: Any, models_dir: Path
) -> None:
    """Under a looping client: the relay steps in (a private server of the stable revision,
    the direct one retired), splits 50/50 and counts per revision; the promotion hands the
    socket to the candidate's revision again. No request fails throughout."""
    url, direct_pid = default.prediction_url, default.status.server.pid
    b = _cfg(models_dir, "b")
    with RequestLoop(url, BODY, HEADERS, max_seconds=300) as loop:
        time.sleep(0.5)
        svc = mlflow_deployer.deploy(b, timeout=180, canary_percent=50)
        assert not svc.status.direct and _accepting(svc)
        assert svc.status.server_port is not None and svc.status.canary_port is not None
        assert _gone(direct_pid)
        answers = {tuple(svc.predict([[1.0, 2.0]])) for _ in range(8)}
        assert answers == {(0,), (1,)}
        metrics = svc.read_revision_metrics()
        assert metrics[default.config.config_hash()].requests > 0
        assert metrics[b.config_hash()].requests > 0
        svc = mlflow_deployer.promote(svc)
        time.sleep(0.5)
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

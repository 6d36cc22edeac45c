"""`zmd-bentoml` deployed with the defaults (``data_path="auto"``): the direct data path (a gate
in each of `bentoml serve`'s API workers), with the relay stepping into the data path by itself
for a canary and out again after. One deployment goes through the tests in order (real BentoML
servers, 127.0.0.1)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
from click.testing import CliRunner

from zenml_model_deployers.cli import main as zmd
from zenml_model_deployers.errors import ConfigurationError
from zenml_model_deployers.flavors.bentoml.config import BentoMLDeploymentConfig
from zenml_model_deployers.local import gate
from zenml_model_deployers.testing.request_loop import RequestLoop

NAME = "bento-default-path"
BODY = b'{"input_data": [[1.0, 2.0]]}'
HEADERS = {"Content-Type": "application/json"}


def _cfg(bentos: dict[str, str], variant: str, **kw: Any) -> BentoMLDeploymentConfig:
    return BentoMLDeploymentConfig(deployment_name=NAME, model_uri=bentos[variant], **kw)


def _accepting(svc: Any) -> bool:
    return bool(svc.front.call({"cmd": "status"})["accepting"])


def _gone(pid: int) -> bool:
    return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def _opened(svc: Any) -> int:
    return Path(str(svc.status.log_path)).read_text(errors="replace").count(gate.OPENED)


@pytest.fixture(scope="module")
def default(bentoml_deployer: Any, bentos: dict[str, str]) -> Any:
    svc = bentoml_deployer.deploy(_cfg(bentos, "a"), timeout=180)
    yield svc
    live = bentoml_deployer.find_deployment(NAME)
    if live is not None:
        bentoml_deployer.delete(live)


def test_the_default_is_the_direct_data_path(default: Any, bentos: dict[str, str]) -> None:
    assert default.config.data_path == "auto"
    assert default.status.direct and default.status.server_port is not None
    assert not _accepting(default)  # the API worker accepts on the URL's socket, not the relay
    assert len(list(default.workdir.glob("server-*.log"))) == 1 and _opened(default) == 1
    url = default.prediction_url
    assert requests.post(url, data=BODY, headers=HEADERS, timeout=30).json() == [0]
    # The server counts what it takes on the public socket (the relay saw none of it).
    metrics = default.read_revision_metrics()[default.config.config_hash()]
    assert metrics.requests >= 1
    # The default hashes as the former relay-only config: deployments made before keep theirs.
    cfg = _cfg(bentos, "a")
    assert cfg.config_hash() == cfg.model_copy(update={"data_path": "relay"}).config_hash()
    with pytest.raises(ConfigurationError, match="containerized"):
        _cfg(bentos, "a", data_path="direct", containerize=True)


def test_an_update_starts_the_new_server_once_and_loses_no_request(
    bentoml_deployer: Any, default: Any, bentos: dict[str, str]
) -> None:
    svc = bentoml_deployer.find_deployment(NAME)
    url, old_pid = svc.prediction_url, svc.status.server.pid
    logs = set(svc.workdir.glob("server-*.log"))
    with RequestLoop(url, BODY, HEADERS, max_seconds=300) as loop:
        time.sleep(0.5)
        new = bentoml_deployer.deploy(_cfg(bentos, "b"), timeout=180)
        time.sleep(0.5)
    assert loop.failures == [], loop.failures[:5]
    assert loop.ok > 10 and loop.answers[-1] == [1]
    assert len(set(new.workdir.glob("server-*.log")) - logs) == 1
    assert new.status.direct and not _accepting(new) and _gone(old_pid)
    assert _opened(new) == 1


def test_a_canary_of_another_bento_rolls_back_and_promotes_without_a_failed_request(
    bentoml_deployer: Any, default: Any, bentos: dict[str, str]
) -> None:
    """A canary of another bento (each revision pins its own BentoML home: the candidate's
    server runs with the candidate's). The relay steps in (the serving server closes its gate
    and answers the relay on its private port: nothing starts but the candidate) and out after
    the rollback and after the promotion; a looping client sees no failed request."""
    svc = bentoml_deployer.find_deployment(NAME)
    pid, stable, b_store = svc.status.server.pid, svc.config.config_hash(), svc.status.store
    candidate = _cfg(bentos, "a")
    with RequestLoop(svc.prediction_url, BODY, HEADERS, max_seconds=400) as loop:
        canary = bentoml_deployer.deploy(candidate, timeout=180, canary_percent=50)
        assert not canary.status.direct and _accepting(canary)
        assert canary.status.server.pid == pid and canary.status.canary_server is not None
        # The candidate's home is its own, recorded for the promotion (maybe another process).
        stored = bentoml_deployer.find_deployment(NAME).status
        assert stored.canary_store == canary.status.canary_store not in (None, b_store)
        assert {canary.predict([[1.0, 2.0]])[0] for _ in range(20)} == {0, 1}  # a's, b's
        metrics = canary.read_revision_metrics()
        assert metrics[stable].requests > 0 and metrics[candidate.config_hash()].requests > 0
        back = bentoml_deployer.rollback(canary)
        assert back.status.direct and not _accepting(back) and back.status.canary_server is None
        assert back.status.server.pid == pid and back.predict([[1.0, 2.0]]) == [1]
        assert back.status.store == b_store and len(list(back.workdir.glob("store-*"))) == 1

        canary = bentoml_deployer.deploy(candidate, timeout=180, canary_percent=50)
        new_pid = canary.status.canary_server.pid
        promoted = bentoml_deployer.promote(canary)
        assert promoted.status.direct and not _accepting(promoted) and _gone(pid)
        assert promoted.status.server.pid == new_pid and promoted.predict([[1.0, 2.0]]) == [0]
        assert promoted.status.store != b_store and [promoted.status.store] == [
            str(p) for p in promoted.workdir.glob("store-*")
        ]
        time.sleep(0.5)
    assert loop.failures == [], loop.failures[:5]
    assert loop.ok > 10 and {1, 0} <= {a[0] for a in loop.answers} and loop.answers[-1] == [0]


def test_a_killed_server_heals_and_a_start_after_a_killed_front_serves(
    bentoml_deployer: Any, default: Any
) -> None:
    svc = bentoml_deployer.find_deployment(NAME)
    url, pid = svc.prediction_url, svc.status.server.pid
    server = psutil.Process(pid)
    for p in [server, *server.children(recursive=True)]:
        p.kill()
    deadline = time.monotonic() + 120
    while (again := bentoml_deployer.find_deployment(NAME)).status.restarts != 1:
        assert time.monotonic() < deadline, again.status
        time.sleep(0.2)
    # Requests sent meanwhile wait in the socket's backlog; the restarted server opens its
    # gate by itself (the revision was verified when it was deployed).
    assert requests.post(url, data=BODY, headers=HEADERS, timeout=60).json() == [0]
    assert again.status.direct and not _accepting(again) and again.status.server.pid != pid
    # The direct server holds the public socket when its front is killed: `zmd models start`
    # ends it and starts both again on the same URL.
    psutil.Process(again.status.relay.pid).kill()
    psutil.wait_procs([psutil.Process(again.status.relay.pid)], timeout=10)
    res = CliRunner().invoke(zmd, ["models", "start", NAME])
    assert res.exit_code == 0, res.output
    back = bentoml_deployer.find_deployment(NAME)
    assert back.prediction_url == url and back.status.direct and not _accepting(back)
    assert requests.post(url, data=BODY, headers=HEADERS, timeout=30).json() == [0]

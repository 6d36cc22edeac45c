"""`zmd models start --all` after a reboot, and `--port` / the deploy's `port=` moving a
deployment whose recorded port was taken (real MLflow servers on 127.0.0.1)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from click.testing import CliRunner

from zenml_model_deployers.cli import main as zmd
from zenml_model_deployers.flavors.mlflow.config import MLflowDeploymentConfig
from zenml_model_deployers.local.launch import free_port


def _kill_all(svc: Any) -> None:
    """What a reboot does to a deployment's processes."""
    procs = []
    for handle in (svc.status.server, svc.status.relay):
        live = handle.process() if handle is not None else None
        if live is not None:
            procs += [live, *live.children(recursive=True)]
    for p in procs:
        p.kill()
    psutil.wait_procs(procs, timeout=10)


@pytest.fixture
def cleanup(mlflow_deployer: Any) -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        found = mlflow_deployer.find_deployment(name)
        if found is not None:
            mlflow_deployer.delete(found)


def test_start_all_brings_back_what_was_running(
    mlflow_deployer: Any, models_dir: Path, cleanup: list[str]
) -> None:
    cleanup += ["boot-running", "boot-stopped"]
    running = mlflow_deployer.deploy(
        MLflowDeploymentConfig(deployment_name="boot-running", model_uri=str(models_dir / "a")),
        timeout=120,
    )
    stopped = mlflow_deployer.deploy(
        MLflowDeploymentConfig(deployment_name="boot-stopped", model_uri=str(models_dir / "b")),
        timeout=120,
    )
    mlflow_deployer.stop(stopped)
    _kill_all(running)

    res = CliRunner().invoke(zmd, ["models", "start", "--all"])
    assert res.exit_code == 0, res.output
    assert f"boot-running: serves at {running.prediction_url}" in res.output
    assert "boot-stopped" not in res.output  # stopped on purpose: stays stopped
    back = mlflow_deployer.find_deployment("boot-running")
    assert back.status.state.value == "active" and back.prediction_url == running.prediction_url
    assert back.predict([[1.0, 2.0]]) == [0]
    assert mlflow_deployer.find_deployment("boot-stopped").status.state.value == "inactive"

    again = CliRunner().invoke(zmd, ["models", "start", "--all"])
    assert again.exit_code == 0 and "boot-running: already serves" in again.output
    usage = CliRunner().invoke(zmd, ["models", "start", "--all", "boot-running"])
    assert usage.exit_code == 2 and "not both" in usage.output


def test_start_port_moves_a_deployment_whose_port_was_taken(
    mlflow_stack: str, mlflow_deployer: Any, models_dir: Path, cleanup: list[str]
) -> None:
    from zenml import pipeline
    from zenml_model_deployers.steps import mlflow_deployer_step

    cleanup.append("movable")
    svc = mlflow_deployer.deploy(
        MLflowDeploymentConfig(deployment_name="movable", model_uri=str(models_dir / "a")),
        timeout=120,
    )
    recorded = svc.status.public_port
    mlflow_deployer.stop(svc)
    r = CliRunner()
    with socket.socket() as squatter:  # another program takes the port meanwhile
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", recorded))
        squatter.listen()
        res = r.invoke(zmd, ["models", "start", "movable"])
        assert res.exit_code == 1
        assert f"Port {recorded}" in res.output and "--port" in res.output

        # Taken as well: refused, and nothing changed.
        res = r.invoke(zmd, ["models", "start", "movable", "--port", str(recorded)])
        assert res.exit_code == 1 and "already in use" in res.output

        port = free_port()
        res = r.invoke(zmd, ["models", "start", "movable", "--port", str(port)])
        assert res.exit_code == 0, res.output
        url = f"http://127.0.0.1:{port}/invocations"
        assert url in res.output
        moved = mlflow_deployer.find_deployment("movable")
        assert moved.prediction_url == url and moved.predict([[1.0, 2.0]]) == [0]
        rows = json.loads(r.invoke(zmd, ["models", "list", "-o", "json"]).output)
        assert next(x for x in rows if x["name"] == "movable")["url"] == url

    # A running deployment moves without restarting its server (on the default direct data
    # path the relay steps in on the old port and out on the new one: the server takes it).
    server_pid = moved.status.server.pid
    port2 = free_port()
    res = r.invoke(zmd, ["models", "start", "movable", "--port", str(port2)])
    assert res.exit_code == 0, res.output
    again = mlflow_deployer.find_deployment("movable")
    assert again.prediction_url == f"http://127.0.0.1:{port2}/invocations"
    assert again.status.server.pid == server_pid and again.predict([[1.0, 2.0]]) == [0]
    assert again.status.direct
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0  # the old front is gone

    # The deploy step's `port=` (a pinned port: a new revision) moves a stopped one too.
    mlflow_deployer.stop(again)
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", port2))
        squatter.listen()
        port3 = free_port()

        @pipeline(enable_cache=False)
        def move_with_the_step() -> None:
            mlflow_deployer_step(
                model_uri=str(models_dir / "a"), deployment_name="movable", port=port3
            )

        move_with_the_step.with_options(run_name="move-with-the-step")()
        pinned = mlflow_deployer.find_deployment("movable")
        assert pinned.prediction_url == f"http://127.0.0.1:{port3}/invocations"
        assert pinned.predict([[1.0, 2.0]]) == [0]

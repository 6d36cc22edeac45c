"""Bad input and faults on `zmd-mlflow`, with real MLflow servers on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from click.testing import CliRunner

from zenml_model_deployers.cli import main as zmd
from zenml_model_deployers.errors import DeploymentError, PortInUseError
from zenml_model_deployers.flavors.mlflow.config import MLflowDeploymentConfig


def _processes_mentioning(text: str) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if text in " ".join(p.info["cmdline"] or []):
                out.append(p)
        except psutil.Error:
            continue
    return out


def test_missing_model_fails_fast_with_mlflows_message(
    mlflow_deployer: Any, tmp_path: Path
) -> None:
    from zenml.client import Client

    uri = str(tmp_path / "no-such-model")
    cfg = MLflowDeploymentConfig(deployment_name="missing-model", model_uri=uri)
    t0 = time.monotonic()
    with pytest.raises(DeploymentError) as err:
        mlflow_deployer.deploy(cfg, timeout=120)
    elapsed = time.monotonic() - t0
    assert elapsed < 15, f"took {elapsed:.1f} s"
    assert "No such artifact" in str(err.value)  # MLflow's own words
    assert mlflow_deployer.find_deployment("missing-model") is None
    assert not [
        s for s in Client().list_services(size=1000).items if s.name == "zenml-missing-model"
    ]
    time.sleep(0.5)
    assert _processes_mentioning(uri) == []
    assert _processes_mentioning("/missing-model/relay.json") == []


def test_pinned_port_in_use_is_a_clear_error(
    mlflow_deployer: Any, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first deploy to a taken port fails before any server starts, and its hint is one that
    works: another `port=` (`zmd models start` has no deployment to move: none was made)."""
    from zenml_model_deployers import cli
    from zenml_model_deployers.local import process

    spawned: list[Any] = []
    real_spawn = process.spawn
    monkeypatch.setattr(process, "spawn", lambda *a, **k: spawned.append(a) or real_spawn(*a, **k))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        cfg = MLflowDeploymentConfig(
            deployment_name="busy-port", model_uri=str(models_dir / "a"), port=busy
        )
        with pytest.raises(PortInUseError) as err:
            mlflow_deployer.deploy(cfg, timeout=60)
    assert f"Port {busy}" in str(err.value)
    assert "`port=`" in str(err.value.hint) and "zmd models start" not in str(err.value.hint)
    assert spawned == []  # no model server loaded for nothing
    assert mlflow_deployer.find_deployment("busy-port") is None
    assert _processes_mentioning(str(models_dir / "a") + " ") == []

    # `zmd models start NAME --port P` of a name that matches nothing says so at once, from
    # the store's rows, without ZenML's client (which lists and refreshes every deployment).
    def took_zenml(*a: Any, **k: Any) -> Any:
        raise AssertionError("took ZenML's path")

    monkeypatch.setattr(cli, "all_services", took_zenml)
    res = CliRunner().invoke(zmd, ["models", "start", "busy-port", "--port", str(busy)])
    assert res.exit_code == 1 and "No deployment matches 'busy-port'" in res.output


def test_killed_front_shows_not_running_and_start_restores_same_url(
    mlflow_deployer: Any, models_dir: Path
) -> None:
    """A killed server is restarted by its front (tests/test_supervision.py); a killed front
    (the relay, which supervises) stays down until `zmd models start`, on the same URL."""
    # The relay in the data path: a new front adopts the running server (on the direct data
    # path that server holds the port, and both start afresh).
    cfg = MLflowDeploymentConfig(
        deployment_name="killed", model_uri=str(models_dir / "a"), data_path="relay"
    )
    svc = mlflow_deployer.deploy(cfg, timeout=120)
    url = svc.prediction_url
    try:
        os.kill(svc.status.relay.pid, signal.SIGKILL)
        psutil.wait_procs([psutil.Process(svc.status.relay.pid)], timeout=10)
        runner = CliRunner()
        res = runner.invoke(zmd, ["models", "list", "-o", "json"])
        assert res.exit_code == 0, res.output
        row = next(r for r in json.loads(res.output) if r["name"] == "killed")
        assert row["state"] == "error"
        table = runner.invoke(zmd, ["models", "list"]).output
        assert " error " in next(line for line in table.splitlines() if " killed " in line)
        res = runner.invoke(zmd, ["models", "start", "killed"])
        assert res.exit_code == 0, res.output
        back = mlflow_deployer.find_deployment("killed")
        assert back.status.state.value == "active"
        assert back.prediction_url == url
        assert back.status.server.pid == svc.status.server.pid  # the server kept running
        assert back.predict([[1.0, 2.0]]) == [0]
        # The new front supervises the server it found: kill that one now, it comes back.
        os.kill(back.status.server.pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while (again := mlflow_deployer.find_deployment("killed")).status.restarts != 1:
            assert time.monotonic() < deadline, again.status
            time.sleep(0.2)
        assert again.prediction_url == url and again.predict([[1.0, 2.0]]) == [0]
    finally:
        mlflow_deployer.delete(mlflow_deployer.find_deployment("killed"))


def test_concurrent_deploys_of_one_deployment_start_one_server(
    mlflow_stack: str, mlflow_deployer: Any, models_dir: Path, tmp_path: Path
) -> None:
    script = tmp_path / "deploy.py"
    script.write_text(
        textwrap.dedent(
            f"""
            from zenml_model_deployers.flavors import get_deployer
            from zenml_model_deployers.flavors.mlflow.config import MLflowDeploymentConfig
            cfg = MLflowDeploymentConfig(deployment_name="racy", model_uri={str(models_dir / "a")!r})
            svc = get_deployer("zmd-mlflow").deploy(cfg, timeout=120)
            print("SERVICE", svc.uuid, svc.status.server.pid)
            """
        )
    )
    procs = [
        subprocess.Popen(
            [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    try:
        lines = [next(ln for ln in o.splitlines() if ln.startswith("SERVICE")) for o, _ in outs]
        assert len({ln.split()[1] for ln in lines}) == 1, lines  # one service
        assert len({ln.split()[2] for ln in lines}) == 1, lines  # one server process
        servers = [
            p
            for p in _processes_mentioning("zenml_model_deployers.flavors.mlflow.serve")
            if str(models_dir / "a") in " ".join(p.cmdline())
        ]
        svc = mlflow_deployer.find_deployment("racy")
        assert [p.pid for p in servers if p.pid == svc.status.server.pid]
    finally:
        svc = mlflow_deployer.find_deployment("racy")
        if svc is not None:
            mlflow_deployer.delete(svc)


def test_logs_redact_a_secret_the_server_prints(mlflow_deployer: Any, tmp_path: Path) -> None:
    import uuid

    import mlflow.pyfunc
    from zenml.client import Client

    class Chatty(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
        def load_context(self, context):  # type: ignore[no-untyped-def]
            import os

            print("token is", os.environ["API_TOKEN"], flush=True)

        def predict(self, context, model_input):  # type: ignore[no-untyped-def]
            return [0]

    mlflow.pyfunc.save_model(str(tmp_path / "chatty"), python_model=Chatty())
    value = f"planted-{uuid.uuid4().hex}"
    Client().create_secret(name="chatty-secret", values={"token": value})
    cfg = MLflowDeploymentConfig(
        deployment_name="chatty",
        model_uri=str(tmp_path / "chatty"),
        env={"API_TOKEN": "{{chatty-secret.token}}"},
    )
    svc = mlflow_deployer.deploy(cfg, timeout=120)
    try:
        assert value in Path(svc.status.log_path).read_text()  # the server did print it
        proc = subprocess.run(
            [sys.executable, "-m", "zenml_model_deployers.cli", "models", "logs", "chatty"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        assert "token is ***" in proc.stdout
        assert value not in proc.stdout + proc.stderr
    finally:
        mlflow_deployer.delete(svc)


def test_pinning_another_port_moves_the_front(mlflow_deployer: Any, models_dir: Path) -> None:
    from zenml_model_deployers.local.launch import free_port

    cfg = MLflowDeploymentConfig(deployment_name="moving", model_uri=str(models_dir / "a"))
    svc = mlflow_deployer.deploy(cfg, timeout=120)
    old_front = svc.status.relay
    try:
        port = free_port()
        moved = mlflow_deployer.deploy(
            MLflowDeploymentConfig(
                deployment_name="moving", model_uri=str(models_dir / "a"), port=port
            ),
            timeout=120,
        )
        assert moved.prediction_url == f"http://127.0.0.1:{port}/invocations"
        assert moved.predict([[1.0, 1.0]]) == [0]
        time.sleep(0.3)
        assert not old_front.is_alive()
    finally:
        mlflow_deployer.delete(mlflow_deployer.find_deployment("moving"))


def test_processes_an_interrupted_deploy_left_are_ended(
    mlflow_deployer: Any, models_dir: Path
) -> None:
    cfg = MLflowDeploymentConfig(deployment_name="orphans", model_uri=str(models_dir / "a"))
    svc = mlflow_deployer.deploy(cfg, timeout=120)
    old_server, old_relay = svc.status.server, svc.status.relay
    # The record loses its processes, as when the deploying process is killed midway.
    svc.status.server = None
    svc.status.relay = None
    mlflow_deployer.persist(svc)
    try:
        back = mlflow_deployer.deploy(cfg, timeout=120)
        assert back.predict([[1.0, 1.0]]) == [0]
        assert not old_server.is_alive() and not old_relay.is_alive()
        assert back.status.server.pid != old_server.pid
    finally:
        mlflow_deployer.delete(mlflow_deployer.find_deployment("orphans"))


def test_a_private_port_taken_before_the_server_binds_it_is_replaced(
    mlflow_deployer: Any, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The OS called the private port free, then another process took it (on a busy machine,
    an outgoing connection's ephemeral port): the server is started on another port."""
    from zenml_model_deployers.local import launch, revisions

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = iter([taken])
        monkeypatch.setattr(revisions, "free_port", lambda: next(ports, None) or launch.free_port())
        cfg = MLflowDeploymentConfig(deployment_name="port-race", model_uri=str(models_dir / "a"))
        svc = mlflow_deployer.deploy(cfg, timeout=120)
    try:
        assert svc.status.server_port != taken and svc.predict([[1.0, 2.0]]) == [0]
        assert not (svc.workdir / "failed").exists()  # nothing failed that a user must read
        assert len(list(svc.workdir.glob("server-*.log"))) == 1
    finally:
        mlflow_deployer.delete(svc)

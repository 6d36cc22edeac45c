"""ZenML as teams run it: a real local ZenML server (REST store), started here.

One server for the session (`zenml login --local --blocking` in its own config dir, so its
pid is ours; ended by pid at the end). The test client's config points at it for this
module only, then goes back to the session's SQLite store. A few key tests: the lifecycle, a
deploy step with its run metadata and artifact reload (in another process, and after the row is
gone), and the CLI's read commands, whose fast path reads the server with one REST request.

This module runs last (file name): it switches the client's store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
from click.testing import CliRunner

from zenml_model_deployers.cli import main as zmd
from zenml_model_deployers.flavors.mlflow.config import MLflowDeploymentConfig
from zenml_model_deployers.local.launch import free_port
from zenml_model_deployers.local.process import ProcessHandle
from zenml_model_deployers.local.state import tail

pytestmark = pytest.mark.slow
SERVER_START_TIMEOUT = 180


@pytest.fixture(scope="module")
def zenml_server(zenml_env: Path) -> Iterator[str]:
    """A local ZenML server; the client connected to it while this module runs."""
    from zenml.config.global_config import GlobalConfiguration
    from zenml.zen_stores.rest_zen_store import RestZenStoreConfiguration

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = zenml_env / "zenml-server.log"
    env = {**os.environ, "ZENML_CONFIG_PATH": str(zenml_env / "zenml-server")}
    zenml_cli = str(Path(sys.executable).parent / "zenml")
    with open(log_path, "ab") as log:
        popen = subprocess.Popen(
            [zenml_cli, "login", "--local", "--blocking", "--port", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    server = ProcessHandle(pid=popen.pid, create_time=psutil.Process(popen.pid).create_time())
    gc = GlobalConfiguration()
    previous = gc.store_configuration.model_copy()
    previous_ids = (gc.active_project_id, gc.active_stack_id)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if popen.poll() is not None:
                pytest.fail(f"the ZenML server exited:\n{tail(log_path, 30)}")
            try:
                if requests.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the ZenML server did not start:\n{tail(log_path, 30)}")
            time.sleep(0.5)
        gc.set_store(RestZenStoreConfiguration(url=url))
        yield url
    finally:
        gc.set_store(previous)
        gc.active_project_id, gc.active_stack_id = previous_ids
        server.terminate(20)
        popen.wait(timeout=10)


@pytest.fixture(scope="module")
def server_deployer(zenml_server: str) -> Any:
    from zenml_model_deployers.flavors import ensure_deployer_stack, get_deployer

    ensure_deployer_stack(
        "zmd-server-mlflow",
        "zmd-server-mlflow",
        "zmd-mlflow",
        configuration={"default_timeout": 120},
    )
    return get_deployer("zmd-mlflow")


def test_the_store_is_the_server(zenml_server: str, server_deployer: Any) -> None:
    from zenml.client import Client

    assert Client().zen_store.type.value == "rest"
    assert Client().zen_store.url == zenml_server


def test_lifecycle_on_a_server(server_deployer: Any, models_dir: Path) -> None:
    from zenml.client import Client

    cfg = MLflowDeploymentConfig(deployment_name="srv-life", model_uri=str(models_dir / "a"))
    svc = server_deployer.deploy(cfg, timeout=120)
    try:
        url = svc.prediction_url
        assert svc.predict([[1.0, 2.0]]) == [0]
        row = Client().get_service(svc.uuid)
        assert row.prediction_url == url and row.labels["zmd_deployment"] == "srv-life"
        assert server_deployer.deploy(cfg, timeout=120).status.server.pid == svc.status.server.pid
        cfg_b = MLflowDeploymentConfig(deployment_name="srv-life", model_uri=str(models_dir / "b"))
        updated = server_deployer.deploy(cfg_b, timeout=120)
        assert updated.prediction_url == url and updated.predict([[1.0, 2.0]]) == [1]
        assert updated.status.revision == 2
        server_deployer.stop(updated)
        assert server_deployer.find_deployment("srv-life").status.state.value == "inactive"
        started = server_deployer.start(server_deployer.find_deployment("srv-life"))
        assert started.prediction_url == url and started.predict([[1.0, 2.0]]) == [1]
    finally:
        found = server_deployer.find_deployment("srv-life")
        if found is not None:
            server_deployer.delete(found)
    assert server_deployer.find_deployment("srv-life") is None
    assert not svc.status.relay.is_alive()


def test_step_metadata_and_artifact_reload_on_a_server(
    server_deployer: Any, models_dir: Path, zenml_env: Path
) -> None:
    from zenml import pipeline
    from zenml.client import Client
    from zenml_model_deployers.steps import mlflow_deployer_step

    @pipeline(enable_cache=False)
    def server_deploy() -> None:
        mlflow_deployer_step(
            model_uri=str(models_dir / "a"), deployment_name="srv-step", timeout=120
        )

    run = server_deploy.with_options(run_name="server-deploy-run")()
    assert run is not None
    try:
        step = Client().get_pipeline_run(run.id).steps["mlflow_deployer_step"]
        url = step.run_metadata["deployed_model_url"]
        assert requests.post(url, json={"inputs": [[1.0, 2.0]]}, timeout=10).json() == {
            "predictions": [0]
        }
        # Another process, connected to the same server, loads the live service.
        code = (
            "from zenml.client import Client\n"
            f"s = Client().get_pipeline_run('{run.id}').steps['mlflow_deployer_step']"
            ".outputs['mlflow_deployment'][0].load()\n"
            "print('LOADED', s.prediction_url, s.is_detached, s.predict([[1.0, 2.0]]))\n"
        )
        script = zenml_env / "work" / "load_server_artifact.py"
        script.write_text(code)
        proc = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, timeout=300
        )
        assert f"LOADED {url} False [0]" in proc.stdout, proc.stderr[-2000:]
        # The row is gone: the artifact still loads, detached, with what the run recorded.
        server_deployer.delete(server_deployer.find_deployment("srv-step"))
        detached = (
            Client()
            .get_pipeline_run(run.id)
            .steps["mlflow_deployer_step"]
            .outputs["mlflow_deployment"][0]
            .load()
        )
        assert detached.is_detached and detached.prediction_url == url
    finally:
        found = server_deployer.find_deployment("srv-step")
        if found is not None:
            server_deployer.delete(found)


def test_cli_reads_the_server_without_zenml(server_deployer: Any, models_dir: Path) -> None:
    """`zmd models list|describe|get-url|logs` read the server with one REST request (no ZenML
    import) and say exactly what ZenML's client path says."""
    from zenml_model_deployers.local.fastlist import local_rows

    cfg = MLflowDeploymentConfig(
        deployment_name="srv-cli", model_name="srv-model", model_uri=str(models_dir / "a")
    )
    svc = server_deployer.deploy(cfg, timeout=120)
    try:
        rows = local_rows()
        assert rows is not None, "the REST fast path should apply to a ZenML server"
        assert [r["name"] for r in rows] == ["srv-cli"]
        r = CliRunner()
        slow_env = {"ZMD_FAST_LIST": "0"}
        for args in (
            ["models", "list", "-o", "json"],
            ["models", "list"],
            ["models", "describe", "srv-cli", "-o", "json"],
            ["models", "get-url", str(svc.uuid)[:8]],
            ["models", "logs", "srv-cli", "--tail", "20"],
            ["models", "describe", "nope-nope"],
        ):
            fast, slow = r.invoke(zmd, args), r.invoke(zmd, args, env=slow_env)
            assert (fast.exit_code, fast.output) == (slow.exit_code, slow.output), args
        row = json.loads(r.invoke(zmd, ["models", "list", "-o", "json"]).output)[0]
        assert row["state"] == "running" and row["url"] == svc.prediction_url
        # No ZenML import on the fast path: a fresh interpreter shows it.
        code = (
            "import sys; from zenml_model_deployers.cli import main\n"
            "sys.argv = ['zmd', 'models', 'get-url', 'srv-cli']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('ZENML_IMPORTED', 'zenml' in sys.modules)\n"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
        )
        assert svc.prediction_url in proc.stdout and "ZENML_IMPORTED False" in proc.stdout, (
            proc.stderr
        )
    finally:
        server_deployer.delete(server_deployer.find_deployment("srv-cli"))

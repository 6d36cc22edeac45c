"""`zmd models start` of a stopped local deployment without ZenML (local/faststart.py): what it
records is what ZenML's path and ZenML's own CLI then read; what it does not handle falls back
(real MLflow servers on 127.0.0.1)."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
from click.testing import CliRunner

from zenml_model_deployers import cli
from zenml_model_deployers.cli import main as zmd
from zenml_model_deployers.flavors.mlflow.config import MLflowDeploymentConfig
from zenml_model_deployers.local import faststart
from zenml_model_deployers.local.fastlist import local_rows


def _row(name: str) -> dict[str, Any]:
    # This flavor's rows: a remote deployment another test left in the worker's store makes the
    # unfiltered fast list step aside (seen on a loaded run, after a failed Databricks test).
    rows = local_rows("zmd-mlflow")
    assert rows is not None
    return next(r for r in rows if r["name"] == name)


def _listed(name: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    res = CliRunner().invoke(zmd, ["models", "list", "-o", "json"], env=env)
    assert res.exit_code == 0, res.output
    out: dict[str, Any] = next(r for r in json.loads(res.output) if r["name"] == name)
    return out


@pytest.fixture(scope="module")
def stopped(
    mlflow_deployer: Any, models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """A deployment of a copy of model a, deployed then stopped; shared by this module's tests
    (one deploy): each leaves it stopped, the last one removes its model."""
    model = tmp_path_factory.mktemp("fast-start") / "model"
    shutil.copytree(models_dir / "a", model)
    svc = mlflow_deployer.deploy(
        # The default: the direct data path (the server opens its gate once it serves).
        MLflowDeploymentConfig(deployment_name="fast-start", model_uri=str(model)),
        timeout=120,
    )
    mlflow_deployer.stop(svc)
    yield svc
    found = mlflow_deployer.find_deployment("fast-start")
    if found is not None:
        mlflow_deployer.delete(found)


def test_what_the_fast_path_leaves_to_zenml(stopped: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """No server starts here: each case returns None (ZenML's path) before starting anything."""
    base = _row("fast-start")
    assert faststart._simple(base) is not None

    def case(**change: Any) -> dict[str, Any]:
        row = json.loads(json.dumps({**base, "workdir": str(base["workdir"])}))
        row["workdir"] = Path(row["workdir"])
        for key, value in change.items():
            target, _, field = key.partition("__")
            if field:
                row[target][field] = value
            else:
                row[target] = value
        return row

    assert faststart._simple(case(flavor="zmd-bentoml")) is None  # another flavor
    assert faststart._simple(case(config__env={"TOKEN": "{{creds.token}}"})) is None  # a secret
    assert faststart._simple(case(config__api_key="{{k.v}}")) is None
    assert faststart._simple(case(config__smoke_input=[[1.0]])) is None
    assert faststart._simple(case(status__canary_config={"x": 1})) is None
    assert faststart._simple(case(status__config_hash="other")) is None  # spec of another one
    spec = json.loads((base["workdir"] / "supervise.json").read_text())
    # A direct server of an older version (it took the socket at its start, no gate).
    gateless = [*spec["argv"]]
    del gateless[gateless.index("--accept-gate") : gateless.index("--accept-gate") + 2]
    (base["workdir"] / "supervise.json").write_text(json.dumps({**spec, "argv": gateless}))
    assert faststart._simple(case(config__data_path="direct")) is None
    assert faststart._simple(case(config__data_path="relay")) is not None
    # A downloaded model whose revision folder is gone: the server would need the registry.
    remote = [*spec["argv"]]
    remote[remote.index("--model-uri") + 1] = "runs:/0123/model"
    (base["workdir"] / "supervise.json").write_text(json.dumps({**spec, "argv": remote}))
    assert faststart._simple(case(config__model_uri="runs:/0123/model")) is None
    (base["workdir"] / "supervise.json").write_text(json.dumps(spec))
    monkeypatch.setenv("ZMD_FAST_START", "0")
    assert faststart._simple(base) is None
    monkeypatch.delenv("ZMD_FAST_START")
    # Another store than the local SQLite one.
    monkeypatch.setattr(faststart, "sqlite_store", lambda: None)
    assert faststart.start(base, 60) is None


def test_fast_start_is_what_zenml_then_sees(
    stopped: Any, mlflow_deployer: Any, mlflow_stack: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from zenml.cli.cli import cli as zenml_cli

    url, body = stopped.prediction_url, {"inputs": [[1.0, 2.0]]}
    assert _listed("fast-start")["state"] == "stopped"

    def no_zenml(*a: Any, **k: Any) -> Any:
        raise AssertionError("took ZenML's path")

    with monkeypatch.context() as m:
        m.setattr(cli, "resolve_deployment", no_zenml)
        res = CliRunner().invoke(zmd, ["models", "start", "fast-start"])
    assert res.exit_code == 0, res.output
    assert f"Deployment 'fast-start' serves at {url}" in res.output
    assert requests.post(url, json=body, timeout=10).json() == {"predictions": [0]}

    # ZenML's path reads what the fast path recorded: the same row, running, same URL.
    found = mlflow_deployer.find_deployment("fast-start")
    assert found.status.state.value == "active" and found.admin_state.value == "active"
    assert found.prediction_url == url and found.status.restarts == 0
    assert found.status.server.is_alive() and found.status.relay.is_alive()
    # The default direct data path: the server accepts on the URL's socket, not the relay.
    assert found.status.direct and found.status.server_port is not None
    assert not found.front.call({"cmd": "status"})["accepting"]
    assert found.status.last_error == "" and found.status.revision == stopped.status.revision
    fast = _listed("fast-start")
    assert fast["state"] == "running" and fast == _listed("fast-start", {"ZMD_FAST_LIST": "0"})
    out = CliRunner().invoke(zenml_cli, ["model-deployer", "models", "list"])
    assert out.exit_code == 0 and str(found.uuid)[:8] in out.output
    out = CliRunner().invoke(zenml_cli, ["model-deployer", "models", "describe", str(found.uuid)])
    assert out.exit_code == 0 and "\u2705" in out.output  # ZenML's emoji for ACTIVE

    # The front supervises the server it started: a kill heals on the same URL.
    psutil.Process(found.status.server.pid).kill()
    row = _listed("fast-start")
    for _ in range(100):
        if row["restarts"] == 1 and row["state"] == "running":
            break
        time.sleep(0.1)
        row = _listed("fast-start")
    assert row["restarts"] == 1 and row["state"] == "running", row
    assert requests.post(url, json=body, timeout=10).json() == {"predictions": [0]}

    # Already running: ZenML's path says so (nothing to start); stop is ZenML's and stops all.
    res = CliRunner().invoke(zmd, ["models", "start", "fast-start"])
    assert res.exit_code == 0 and url in res.output
    assert CliRunner().invoke(zmd, ["models", "stop", "fast-start"]).exit_code == 0
    assert _listed("fast-start")["state"] == "stopped"
    assert not found.status.relay.is_alive()


def test_fast_start_inside_a_zenml_init_project(
    stopped: Any, zenml_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a `zenml init` project the stopped deployment starts without ZenML too; ZenML's path,
    in the same project, then sees it running and stops it."""
    url = stopped.prediction_url
    with monkeypatch.context() as m:
        m.setattr(cli, "resolve_deployment", lambda *a, **k: pytest.fail("took ZenML's path"))
        res = CliRunner().invoke(zmd, ["models", "start", "fast-start"])
    assert res.exit_code == 0, res.output
    assert f"Deployment 'fast-start' serves at {url}" in res.output
    assert requests.post(url, json={"inputs": [[1.0, 2.0]]}, timeout=10).json() == {
        "predictions": [0]
    }
    assert _listed("fast-start")["state"] == "running"
    assert _listed("fast-start") == _listed("fast-start", {"ZMD_FAST_LIST": "0"})
    assert CliRunner().invoke(zmd, ["models", "stop", "fast-start"]).exit_code == 0
    assert _listed("fast-start")["state"] == "stopped"


def test_a_failed_fast_start_is_recorded_as_zenml_records_it(
    stopped: Any, mlflow_deployer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.rmtree(stopped.config.model_uri)  # the model is gone while it was stopped
    monkeypatch.setattr(cli, "resolve_deployment", lambda *a, **k: pytest.fail("took ZenML's path"))
    res = CliRunner().invoke(zmd, ["models", "start", "fast-start", "--timeout", "60"])
    assert res.exit_code == 1
    assert "did not become ready" in res.output or "exited" in res.output, res.output
    # As after a failed start by ZenML's path: nothing runs (state read live: stopped), the
    # row keeps why, and both paths show it.
    found = mlflow_deployer.find_deployment("fast-start")
    assert found.status.state.value == "inactive" and found.status.server is None
    assert found.status.last_error.startswith("start failed: ")
    assert found.status.relay is None and found.admin_state.value == "inactive"
    desc = CliRunner().invoke(zmd, ["models", "describe", "fast-start", "-o", "json"])
    assert json.loads(desc.output)["status_message"] == found.status.last_error
    assert not any(
        "fast-start" in " ".join(p.info["cmdline"] or [])
        for p in psutil.process_iter(["cmdline"])
        if p.pid != psutil.Process().pid
    )

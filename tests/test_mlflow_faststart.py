"""`zmd-mlflow` starts MLflow's scoring server directly (issue 15): the behaviours users rely on
from `mlflow models serve` hold, registry models are resolved once into the deployment's
folder, and no idle parent process stays alive. Real servers on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from zenml_model_deployers.errors import DeploymentError
from zenml_model_deployers.flavors.mlflow.config import MLflowDeploymentConfig
from zenml_model_deployers.local.process import failure_cause


def _post(url: str, rows: list[list[float]], timeout: float = 30) -> requests.Response:
    return requests.post(url, json={"inputs": rows}, timeout=timeout)


def _tree(pid: int) -> list[psutil.Process]:
    p = psutil.Process(pid)
    return [p, *p.children(recursive=True)]


def _listeners(proc: psutil.Process, port: int) -> bool:
    return any(
        c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
        for c in proc.net_connections(kind="tcp")
    )


@pytest.fixture(scope="module")
def slow_model(models_dir: Path) -> str:
    """A pyfunc model that sleeps for inputs whose first value is positive (request timeout)."""
    import mlflow.pyfunc

    class Sleepy(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
        def predict(self, context, model_input):  # type: ignore[no-untyped-def]
            import time as _t

            import numpy as np

            rows = np.asarray(model_input).tolist()
            if rows and rows[0][0] > 0:
                _t.sleep(3)
            return [0 for _ in rows]

    path = models_dir / "sleepy"
    if not path.exists():
        mlflow.pyfunc.save_model(str(path), python_model=Sleepy())
    return str(path)


def test_workers_timeout_and_routes_are_mlflows(mlflow_deployer: Any, slow_model: str) -> None:
    import mlflow

    cfg = MLflowDeploymentConfig(
        deployment_name="fs-routes", model_uri=slow_model, workers=2, timeout_per_request=1
    )
    svc = mlflow_deployer.deploy(cfg, timeout=120)
    try:
        base = svc.status.url.rstrip("/")
        assert requests.get(base + "/ping", timeout=10).status_code == 200
        assert requests.get(base + "/health", timeout=10).status_code == 200
        version = requests.get(base + "/version", timeout=10)
        assert version.status_code == 200 and version.text == mlflow.__version__
        assert _post(base + "/invocations", [[0.0, 1.0]]).json() == {"predictions": [0]}
        # MLflow's request timeout (MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT): 504 after 1 s.
        t0 = time.monotonic()
        slow = _post(base + "/invocations", [[1.0, 1.0]])
        assert slow.status_code == 504, slow.text
        assert "exceeded limit" in slow.text
        assert time.monotonic() - t0 < 2.9
        # Two uvicorn workers, each a process of the server's tree.
        tree = _tree(svc.status.server.pid)
        workers = [p for p in tree[1:] if "python" in p.name().lower()]
        assert len(workers) >= 2, [p.cmdline() for p in tree]
        # Nothing of `mlflow models serve`'s wrapper: the command is MLflow's uvicorn app.
        assert not any("models serve" in " ".join(p.cmdline()) for p in tree)
        # `--env-manager local`: the deploying interpreter serves, no environment is built.
        assert tree[0].cmdline()[0] == sys.executable
    finally:
        mlflow_deployer.delete(svc)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> dict[str, str]:
    """A local MLflow tracking store + model registry with model `fs-model` version 1 (= a)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("registry")
    uri = (root / "mlruns").as_uri()
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("fs-model")
    exp = client.create_experiment("fs", artifact_location=(root / "artifacts").as_uri())
    run = client.create_run(exp)
    client.log_artifacts(run.info.run_id, str(models_dir / "a"), "model")
    client.set_terminated(run.info.run_id)
    client.create_model_version("fs-model", f"runs:/{run.info.run_id}/model", run.info.run_id)
    assert mlflow.__version__
    return {"uri": uri, "root": str(root)}


def test_registry_model_is_resolved_once_and_restarts_need_no_registry(
    mlflow_deployer: Any, registry: dict[str, str], models_dir: Path
) -> None:
    cfg = MLflowDeploymentConfig(
        deployment_name="fs-registry",
        model_uri="models:/fs-model/1",
        data_path="relay",  # the server on a private port (checked below)
        env={"MLFLOW_TRACKING_URI": registry["uri"], "MLFLOW_REGISTRY_URI": registry["uri"]},
    )
    svc = mlflow_deployer.deploy(cfg, timeout=120)
    moved = Path(registry["root"] + "-gone")
    try:
        url = svc.prediction_url
        assert _post(url, [[1.0, 1.0]]).json() == {"predictions": [0]}
        # The model's files live in the deployment's folder, under the revision's hash.
        rev = svc.workdir / "revisions" / cfg.config_hash()
        assert (rev / "revision.json").exists()
        assert list(rev.rglob("MLmodel")), list(rev.rglob("*"))
        # A failed update (no such version): MLflow's words, the old revision serves, and the
        # failed revision left no folder behind.
        bad = cfg.model_copy(update={"model_uri": "models:/fs-model/99"})
        with pytest.raises(DeploymentError) as err:
            mlflow_deployer.deploy(bad, timeout=120)
        assert "fs-model" in str(err.value).splitlines()[0], str(err.value)
        assert _post(url, [[1.0, 1.0]]).json() == {"predictions": [0]}
        assert [p.name for p in rev.parent.iterdir()] == [rev.name]
        # A canary's candidate whose model fails to load: no candidate, no folder left (its
        # files were resolved before the server failed); the old revision alone serves.
        broken = cfg.model_copy(update={"model_uri": str(models_dir / "broken")})
        with pytest.raises(DeploymentError, match="planted failure"):
            mlflow_deployer.deploy(broken, timeout=120, canary_percent=20)
        assert _post(url, [[1.0, 1.0]]).json() == {"predictions": [0]}
        assert [p.name for p in rev.parent.iterdir()] == [rev.name]
        assert mlflow_deployer.find_deployment("fs-registry").canary_candidate() is None
        # One process serves: it listens on the private port and has no children.
        server = psutil.Process(svc.status.server.pid)
        assert _listeners(server, svc.status.server_port)
        assert server.children(recursive=True) == []

        # The registry disappears; a crash and a stop/start still serve the same revision.
        os.rename(registry["root"], moved)
        os.kill(svc.status.server.pid, signal.SIGKILL)
        deadline = time.monotonic() + 90
        while True:
            try:
                if _post(url, [[1.0, 1.0]], timeout=5).json() == {"predictions": [0]}:
                    break
            except (requests.RequestException, ValueError):
                pass
            assert time.monotonic() < deadline, "self-heal did not serve again"
            time.sleep(0.2)
        # The front records the restart just after the server answers: bounded wait.
        deadline = time.monotonic() + 10
        while (healed := mlflow_deployer.find_deployment("fs-registry")).status.restarts != 1:
            assert time.monotonic() < deadline, healed.status
            time.sleep(0.1)
        mlflow_deployer.stop(healed)
        started = mlflow_deployer.start(mlflow_deployer.find_deployment("fs-registry"))
        assert started.predict([[1.0, 1.0]]) == [0]
    finally:
        if moved.exists():
            os.rename(moved, registry["root"])
        left = mlflow_deployer.find_deployment("fs-registry")
        if left is not None:
            mlflow_deployer.delete(left)


@pytest.mark.parametrize("variant", ["missing", "broken"])
def test_unloadable_models_fail_with_the_error_mlflow_models_serve_gives(
    mlflow_deployer: Any, models_dir: Path, tmp_path: Path, variant: str
) -> None:
    from zenml_model_deployers.local.launch import free_port

    uri = str(models_dir / variant)
    log = tmp_path / "raw.log"
    with open(log, "wb") as out:
        raw = subprocess.run(
            [sys.executable, "-m", "mlflow", "models", "serve", "-m", uri]
            + ["--env-manager", "local", "--host", "127.0.0.1", "-p", str(free_port())],
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=120,
            env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
        )
    assert raw.returncode != 0
    expected = failure_cause(log)
    assert expected, log.read_text()[-2000:]
    cfg = MLflowDeploymentConfig(deployment_name=f"fs-{variant}", model_uri=uri)
    with pytest.raises(DeploymentError) as err:
        mlflow_deployer.deploy(cfg, timeout=120)
    assert str(err.value).splitlines()[0] == expected
    assert mlflow_deployer.find_deployment(f"fs-{variant}") is None
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_old_revisions_are_pruned_and_nothing_else(tmp_path: Path) -> None:
    from zenml_model_deployers.flavors.mlflow.serve import KEEP_REVISIONS, prune_revisions

    root = tmp_path / "revisions"
    for i in range(KEEP_REVISIONS + 2):
        rev = root / f"rev{i}"
        rev.mkdir(parents=True)
        (rev / "revision.json").write_text("{}")
        os.utime(rev, (1000 + i, 1000 + i))
    (root / "not-a-revision").mkdir()
    prune_revisions(root, keep="rev0")  # the oldest, but starting now
    left = sorted(p.name for p in root.iterdir())
    assert left == ["not-a-revision", "rev0", "rev3", "rev4", "rev5"]

"""Test session: ZenML runs for real in an isolated config dir and working directory.

Every process a test starts lives under that config dir (relay, servers); the session
finalizer ends the ones still running, by pid, so no stray server holds CI's output open.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_ROOT = Path(tempfile.mkdtemp(prefix="zmd-tests-"))
os.environ["ZENML_CONFIG_PATH"] = str(_ROOT / "zenml")
os.environ["ZENML_ANALYTICS_OPT_IN"] = "false"
os.environ["ZENML_LOGGING_VERBOSITY"] = "WARN"
os.environ["ZENML_ENABLE_RICH_TRACEBACK"] = "false"
os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
os.environ["AUTO_OPEN_DASHBOARD"] = "false"
# `mlflow models serve` execs uvicorn by name.
os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")


def _kill_our_processes() -> None:
    import psutil

    marker = str(_ROOT)
    me = os.getpid()
    victims = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if p.pid != me and marker in " ".join(p.info["cmdline"] or []):
                victims.append(p)
        except psutil.Error:
            continue
    from zenml_model_deployers.local.process import terminate_all

    terminate_all(victims, 10)


@pytest.fixture(scope="session", autouse=True)
def zenml_env() -> Iterator[Path]:
    """An isolated ZenML store; cwd inside it; every started process ended at the end."""
    workdir = _ROOT / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    old = os.getcwd()
    os.chdir(workdir)
    try:
        yield _ROOT
    finally:
        os.chdir(old)
        _kill_our_processes()
        shutil.rmtree(_ROOT, ignore_errors=True)


@pytest.fixture(scope="session")
def models_dir(zenml_env: Path) -> Path:
    """Three MLflow models built here (no download): a, b (different predictions), broken."""
    import mlflow.pyfunc
    import numpy as np
    from sklearn.dummy import DummyClassifier

    out = zenml_env / "models"
    x = np.array([[0.0, 1.0], [1.0, 0.0]])
    for variant, constant in (("a", 0), ("b", 1)):
        clf = DummyClassifier(strategy="constant", constant=constant).fit(x, [0, 1])
        mlflow.sklearn.save_model(clf, str(out / variant), serialization_format="pickle")

    class Broken(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
        # no type hints on predict: MLflow warns about them
        def load_context(self, context: object) -> None:
            raise RuntimeError("model weights are corrupt (planted failure)")

        def predict(self, context, model_input):  # type: ignore[no-untyped-def]
            return [0]

    mlflow.pyfunc.save_model(str(out / "broken"), python_model=Broken())
    return out


@pytest.fixture(scope="session")
def mlflow_stack(zenml_env: Path) -> str:
    """A ZenML stack whose model deployer is `zmd-mlflow`, made active."""
    from zenml_model_deployers.flavors import ensure_deployer_stack

    ensure_deployer_stack("zmd-test", "zmd-test-mlflow", configuration={"default_timeout": 120})
    return "zmd-test"


@pytest.fixture(scope="session")
def mlflow_deployer(mlflow_stack: str):  # type: ignore[no-untyped-def]
    """The active stack's `zmd-mlflow` deployer."""
    from zenml_model_deployers.flavors import get_deployer

    return get_deployer("zmd-mlflow")

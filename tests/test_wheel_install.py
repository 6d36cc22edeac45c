"""A regular install (the wheel `make dist` builds): a run made with it, inside a ZenML
source root, loads its service artifact in another process.

With an editable install under a ZenML source root, ZenML records our classes as user sources
(module paths made from folder names) that another process cannot import; installed from the
wheel they are recorded by their import path, importable anywhere.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

RUN = """
from zenml import pipeline
from zenml_model_deployers.flavors import ensure_deployer_stack
from zenml_model_deployers.steps import mlflow_deployer_step

ensure_deployer_stack("wheel-stack", "wheel-local", "zmd-mlflow")

@pipeline(enable_cache=False)
def wheel_pipeline() -> None:
    mlflow_deployer_step(model_uri={model_uri!r}, deployment_name="from-wheel", timeout=120)

run = wheel_pipeline()
print("RUN", run.id)
"""

LOAD = """
import sys
import zenml_model_deployers
from zenml.client import Client
from zenml_model_deployers.flavors import get_deployer

assert zenml_model_deployers.__file__.startswith(sys.argv[2]), zenml_model_deployers.__file__
step = Client().get_pipeline_run(sys.argv[1]).steps["mlflow_deployer_step"]
artifact = step.outputs["mlflow_deployment"][0]
print("SOURCE", artifact.materializer.import_path, artifact.materializer.type.value)
service = artifact.load()
print("LOADED", type(service).__module__, service.prediction_url)
print("PREDICT", service.predict([[1.0, 2.0]]))
get_deployer("zmd-mlflow").delete(service)
"""


def _sh(argv: list[str], env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{argv}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_a_run_made_with_the_wheel_loads_in_another_process(
    zenml_env: Path, models_dir: Path
) -> None:
    home = zenml_env / "wheel"
    home.mkdir()
    env = {**os.environ, "ZENML_CONFIG_PATH": str(home / "zenml")}
    _sh(["make", "-s", "dist"], env, ROOT)
    wheel = sorted((ROOT / "dist").glob("zenml_model_deployers-*.whl"))[-1]
    # A virtual environment with the wheel installed regularly; the dependencies (ZenML, MLflow)
    # come from the test environment's site-packages through a .pth line (not its own .pth
    # files, so the checkout's editable install is not visible there).
    venv = home / "venv"
    _sh([getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(venv)], env, home)
    py = venv / "bin" / "python"
    purelib = _sh(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], env, home
    )
    (Path(purelib.strip()) / "zmd-test-deps.pth").write_text(site.getsitepackages()[0] + "\n")
    uv = Path(sys.executable).parent / "uv"
    _sh(
        [str(uv), "pip", "install", "--quiet", "--no-deps", "--python", str(py), str(wheel)],
        env,
        home,
    )

    # The run: inside a ZenML source root (`zenml init`), as a user project is.
    project = home / "project"
    project.mkdir()
    _sh([str(py), "-c", "from zenml.cli.cli import cli; cli()", "init"], env, project)
    (project / "run.py").write_text(RUN.format(model_uri=str(models_dir / "a")))
    out = _sh([str(py), "run.py"], env, project)
    run_id = next(ln.split()[1] for ln in out.splitlines() if ln.startswith("RUN "))

    # Another process, elsewhere (no source root): the artifact loads and serves.
    elsewhere = home / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "load.py").write_text(LOAD)
    out = _sh([str(py), "load.py", run_id, purelib.strip()], env, elsewhere)
    lines = dict(ln.split(" ", 1) for ln in out.splitlines() if ln.split(" ", 1)[0].isupper())
    # Recorded by its import path, not as a source of the user's project (which another
    # process could only load from that project's root).
    path, kind = lines["SOURCE"].split()
    assert path == "zenml_model_deployers.materializer.ServiceMaterializer"
    assert kind != "user", kind
    assert lines["LOADED"].startswith("zenml_model_deployers.flavors.mlflow.service http://")
    assert lines["PREDICT"] == "[0]"

"""Install the package regularly, not editable inside a ZenML source root (the README says why).

With an editable install whose files lie under a ZenML source root (a folder with `.zen`),
ZenML takes our modules for the user's own code and records them by their path from that root
(`src.zenml_model_deployers...`), which another process, elsewhere, cannot import: the first
test shows it, with the same ZenML calls that record and load an artifact's materializer.
Installed from the wheel (`make dist`) they are recorded by their import path: the second test
runs a pipeline inside a source root and loads its service artifact in another process.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import zipfile
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


def _venv_with(home: Path, env: dict[str, str], *install: str) -> tuple[Path, str]:
    """A virtual environment with the package installed as given (uv pip install arguments);
    the dependencies (ZenML, MLflow) come from the test environment's site-packages through a
    .pth line (not its own .pth files, so the checkout's editable install is not visible
    there). Returns (python, its site-packages)."""
    venv = home / "venv"
    _sh([getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(venv)], env, home)
    py = venv / "bin" / "python"
    purelib = _sh(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], env, home
    ).strip()
    (Path(purelib) / "zmd-test-deps.pth").write_text(site.getsitepackages()[0] + "\n")
    uv = Path(sys.executable).parent / "uv"
    _sh(
        [str(uv), "pip", "install", "--quiet", "--no-deps", "--python", str(py), *install],
        env,
        home,
    )
    return py, purelib


RESOLVE = """
from zenml.utils import source_utils
from zenml_model_deployers.materializer import ServiceMaterializer

source = source_utils.resolve(ServiceMaterializer)
print("SOURCE", source.import_path, source.type.value)
"""

LOAD_SOURCE = """
import sys
from zenml.config.source import Source, SourceType
from zenml.utils import source_utils

try:
    source_utils.load(Source(module=sys.argv[1], attribute=sys.argv[2], type=SourceType.USER))
except ImportError as e:
    print("FAILED", type(e).__name__, e)
else:
    print("LOADED")
"""


def test_an_editable_install_under_a_source_root_records_what_elsewhere_cannot_load(
    zenml_env: Path,
) -> None:
    """What the README warns about, as ZenML 0.98 does it: an editable install of a checkout
    that lies inside the user's project (`zenml init`) records our materializer as a user
    source named by folders, and a process elsewhere fails to import it."""
    home = zenml_env / "editable"
    project = home / "project"
    checkout = project / "zenml-model-deployers"
    checkout.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, checkout / name)
    for name in ("src", "steps"):
        shutil.copytree(ROOT / name, checkout / name, ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "ZENML_CONFIG_PATH": str(home / "zenml")}
    py, _ = _venv_with(home, env, "-e", str(checkout))
    _sh([str(py), "-c", "from zenml.cli.cli import cli; cli()", "init"], env, project)
    (project / "resolve.py").write_text(RESOLVE)
    out = _sh([str(py), "resolve.py"], env, project)
    path, kind = next(ln for ln in out.splitlines() if ln.startswith("SOURCE ")).split()[1:]
    assert kind == "user", out
    assert (
        path == "zenml-model-deployers.src.zenml_model_deployers.materializer.ServiceMaterializer"
    )

    elsewhere = home / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "load.py").write_text(LOAD_SOURCE)
    module, attribute = path.rsplit(".", 1)
    out = _sh([str(py), "load.py", module, attribute], env, elsewhere)
    assert out.startswith("FAILED ModuleNotFoundError"), out


def test_a_run_made_with_the_wheel_loads_in_another_process(
    zenml_env: Path, models_dir: Path
) -> None:
    home = zenml_env / "wheel"
    home.mkdir()
    env = {**os.environ, "ZENML_CONFIG_PATH": str(home / "zenml")}
    _sh(["make", "-s", "dist"], env, ROOT)
    wheel = sorted((ROOT / "dist").glob("zenml_model_deployers-*.whl"))[-1]
    # The simulated cluster's CRDs travel in the wheel: an install needs nothing beside it.
    with zipfile.ZipFile(wheel) as whl:
        crds = {n.rsplit("/", 1)[-1] for n in whl.namelist() if "/testing/crds/" in n}
    assert crds >= {
        "README.md",
        "mlops.seldon.io_models.yaml",
        "mlops.seldon.io_experiments.yaml",
        "machinelearning.seldon.io_seldondeployments.yaml",
        "serving.kserve.io_inferenceservices.yaml",
    }, crds
    _assert_offers_the_testing_extra(wheel)
    py, purelib = _venv_with(home, env, str(wheel))

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
    out = _sh([str(py), "load.py", run_id, purelib], env, elsewhere)
    lines = dict(ln.split(" ", 1) for ln in out.splitlines() if ln.split(" ", 1)[0].isupper())
    # Recorded by its import path, not as a source of the user's project (which another
    # process could only load from that project's root).
    path, kind = lines["SOURCE"].split()
    assert path == "zenml_model_deployers.materializer.ServiceMaterializer"
    assert kind != "user", kind
    assert lines["LOADED"].startswith("zenml_model_deployers.flavors.mlflow.service http://")
    assert lines["PREDICT"] == "[0]"


def _assert_offers_the_testing_extra(wheel: Path) -> None:
    """docs/custom.md installs this wheel with `[testing]` for the conformance suite: the
    wheel offers that extra, and it brings pytest."""
    import zipfile
    from email.parser import Parser

    with zipfile.ZipFile(wheel) as whl:
        name = next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(whl.read(name).decode())
    assert "testing" in meta.get_all("Provides-Extra", [])
    requires = meta.get_all("Requires-Dist", [])
    assert any(r.startswith("pytest") and 'extra == "testing"' in r for r in requires), requires

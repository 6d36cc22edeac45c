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
from typing import Any

import pytest

_ROOT = Path(tempfile.mkdtemp(prefix="zmd-tests-"))
os.environ["ZENML_CONFIG_PATH"] = str(_ROOT / "zenml")
os.environ["ZENML_ANALYTICS_OPT_IN"] = "false"
os.environ["ZENML_LOGGING_VERBOSITY"] = "WARN"
os.environ["ZENML_ENABLE_RICH_TRACEBACK"] = "false"
os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
os.environ["BENTOML_HOME"] = str(_ROOT / "bentoml")
os.environ["BENTOML_DO_NOT_TRACK"] = "True"
os.environ["AUTO_OPEN_DASHBOARD"] = "false"
# `mlflow models serve` execs uvicorn by name.
os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # An xdist worker's main module has no file, so ZenML would find no source root (for the
    # steps test modules define at import): give it the one `python -m pytest` has.
    from zenml.utils import source_utils

    source_utils.set_custom_source_root(str(Path(pytest.__file__).parent))


def _scan_distributions_once() -> None:
    """ZenML records the package of each third-party type it stores (an artifact's data type,
    its materializer: a fitted model, a DataFrame) by scanning every installed distribution
    (`importlib.metadata.packages_distributions()` in `source_utils._get_package_for_module`):
    1-2 s a scan in this venv on a loaded 2-core machine, once per artifact, so 22-28 s of a
    45-66 s zoo run. The installed set does not change while a test process runs: here the
    same lookup reads one scan. (Only a cost: what ZenML records is the same.)"""
    import functools
    from importlib.metadata import packages_distributions

    from zenml.utils import source_utils

    if not hasattr(source_utils, "_get_package_for_module"):
        return  # another ZenML: its own lookup, at its own cost
    scan = functools.cache(packages_distributions)

    def package_for_module(module_name: str) -> str | None:
        names = scan().get(module_name.split(".", maxsplit=1)[0], [])
        return names[0] if len(names) == 1 else None

    source_utils._get_package_for_module = package_for_module


_scan_distributions_once()


def _sqlite_without_fsync() -> None:
    """Every SQLite database this test process opens (ZenML's store of the session, a throwaway
    temp dir) commits without waiting for the disk (`PRAGMA synchronous=OFF`): a step's
    bookkeeping is tens of commits, each 10-20 ms of fsync on this shared disk; a 12-step
    pipeline run measured 8.2 s -> 5.7 s (medians of 10, load 5-8). Transactions and locking are
    unchanged; only a machine crash could lose what the test run wrote."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    @event.listens_for(Engine, "connect")
    def _no_fsync(dbapi_connection: Any, _record: Any) -> None:
        if type(dbapi_connection).__module__ == "sqlite3":
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA synchronous=OFF")
            cursor.close()


_sqlite_without_fsync()


# The longest test files first (measured with --durations on 2 cores): xdist hands whole files
# to its workers from a queue (`--dist loadfile --no-loadscope-reorder`, the Makefile), so a long
# file started last would run alone at the end while the other worker idles.
_LONGEST_FIRST = (
    "test_vllm.py",
    "test_doc_snippets.py",
    "test_model_zoo_bentoml.py",
    "test_model_zoo_kube.py",
    "test_seldon_lifecycle.py",
    "test_kserve_lifecycle.py",
    "test_custom_flavor_example.py",
    "test_model_zoo_databricks.py",
    "test_bentoml.py",
    "test_batch.py",
    "test_model_zoo.py",
    "test_first_contact.py",
    "test_wheel_install.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Orders the collection so that the longest files are handed out first."""
    rank = {name: i for i, name in enumerate(_LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def _kill_our_processes() -> None:
    import psutil

    marker = str(_ROOT)
    me = os.getpid()
    victims = []
    for p in psutil.process_iter(["pid", "cmdline", "cwd"]):
        try:
            mine = marker in " ".join(p.info["cmdline"] or []) or (p.info["cwd"] or "").startswith(
                marker
            )
            if p.pid != me and mine:
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


def _stack(flavor: str) -> str:
    from zenml_model_deployers.flavors import ensure_deployer_stack

    name = f"zmd-test-{flavor.removeprefix('zmd-')}"
    ensure_deployer_stack(name, name, flavor, configuration={"default_timeout": 120})
    return name


@pytest.fixture
def mlflow_stack(zenml_env: Path) -> str:
    """A ZenML stack whose model deployer is `zmd-mlflow`, made active for this test."""
    return _stack("zmd-mlflow")


@pytest.fixture(scope="session")
def mlflow_deployer(zenml_env: Path):  # type: ignore[no-untyped-def]
    """The registered `zmd-mlflow` deployer."""
    from zenml_model_deployers.flavors import get_deployer

    _stack("zmd-mlflow")
    return get_deployer("zmd-mlflow")


@pytest.fixture
def zenml_repo(zenml_env: Path, tmp_path: Path) -> Iterator[Path]:
    """A `zenml init` project (of this session's store) whose subfolder is the working directory
    while the test runs; this process's ZenML client takes the repository's config, as a
    process started there does. Yields the project's root."""
    from click.testing import CliRunner
    from zenml.cli.cli import cli as zenml_cli
    from zenml.client import Client

    root = tmp_path / "project"
    (root / "pipelines").mkdir(parents=True)
    res = CliRunner().invoke(zenml_cli, ["init", "--path", str(root)])
    assert res.exit_code == 0, res.output
    assert (root / ".zen" / "config.yaml").is_file()
    old = os.getcwd()
    os.chdir(root / "pipelines")
    Client().activate_root()
    try:
        yield root
    finally:
        os.chdir(old)
        Client().activate_root()


@pytest.fixture
def bentoml_stack(zenml_env: Path) -> str:
    """A ZenML stack whose model deployer is `zmd-bentoml`, made active for this test."""
    return _stack("zmd-bentoml")


@pytest.fixture(scope="session")
def bentoml_deployer(zenml_env: Path):  # type: ignore[no-untyped-def]
    """The registered `zmd-bentoml` deployer."""
    from zenml_model_deployers.flavors import get_deployer

    _stack("zmd-bentoml")
    return get_deployer("zmd-bentoml")


BENTO_SERVICE = """
import bentoml
import numpy as np
{extra_import}

@bentoml.service
class ZmdTestService:
    model_ref = bentoml.models.BentoModel("{model_name}:latest")

    def __init__(self) -> None:
        self.model = bentoml.sklearn.load_model(self.model_ref)

    @bentoml.api
    def classify(self, input_data: np.ndarray) -> np.ndarray:
        return self.model.predict(input_data)

    @bentoml.api
    def echo(self, text: str, times: int = 1) -> str:
        return text * times
"""


@pytest.fixture(scope="session")
def bentos(zenml_env: Path) -> dict[str, str]:
    """Three bentos built here: a, b (different predictions), broken (its service cannot be
    imported where it is served: it imports a module that only the build machine has)."""
    import numpy as np
    from sklearn.dummy import DummyClassifier

    from zenml_model_deployers.flavors.bentoml.packaging import build_bento, save_model

    src = zenml_env / "bento-src"
    helper = zenml_env / "bento-build-only"
    src.mkdir(exist_ok=True)
    helper.mkdir(exist_ok=True)
    (helper / "zmd_build_only_helper.py").write_text("VALUE = 1\n")
    x = np.array([[0.0, 1.0], [1.0, 0.0]])
    out = {}
    for variant, constant in (("a", 0), ("b", 1), ("broken", 0)):
        clf = DummyClassifier(strategy="constant", constant=constant).fit(x, [0, 1])
        model_name = f"zmdtest_{variant}"
        tag = save_model(clf, model_name)
        extra = "import zmd_build_only_helper" if variant == "broken" else ""
        (src / f"svc_{variant}.py").write_text(
            BENTO_SERVICE.format(model_name=model_name, extra_import=extra)
        )
        if variant == "broken":
            sys.path.insert(0, str(helper))
        try:
            out[variant] = build_bento(
                f"svc_{variant}.py:ZmdTestService", [tag], working_dir=str(src)
            )
        finally:
            if variant == "broken":
                sys.path.remove(str(helper))
    return out


class FreshConfigs:
    """New, untouched ZenML configs (store created, `default` stack active, nothing else), each
    with its own working directory, as a user's first `zenml` command leaves them.

    Creating a store costs most of a ZenML command's time (~10 s on a loaded 2-core machine), so
    it is made once and copied (the config file names its store's path: rewritten).
    """

    def __init__(self, root: Path) -> None:
        import threading

        self.root = root
        self._template: Path | None = None
        self._lock = threading.Lock()  # tests may make configs from several threads

    def _make_template(self) -> Path:
        import subprocess

        home = self.root / "fresh-template"
        (home / "work").mkdir(parents=True)
        env = {**os.environ, "ZENML_CONFIG_PATH": str(home / "zenml")}
        subprocess.run(
            ["zenml", "stack", "list"],
            env=env,
            cwd=home / "work",
            check=True,
            capture_output=True,
            timeout=300,
        )
        return home / "zenml"

    def new(self, label: str = "fresh") -> tuple[dict[str, str], Path]:
        """A copy of the template: (environment naming it, working directory)."""
        import uuid

        with self._lock:
            if self._template is None:
                self._template = self._make_template()
        home = self.root / f"{label}-{uuid.uuid4().hex[:8]}"
        work = home / "work"
        work.mkdir(parents=True)
        shutil.copytree(self._template, home / "zenml")
        config = home / "zenml" / "config.yaml"
        config.write_text(config.read_text().replace(str(self._template), str(home / "zenml")))
        return {**os.environ, "ZENML_CONFIG_PATH": str(home / "zenml")}, work


@pytest.fixture(scope="session")
def fresh_configs(zenml_env: Path) -> FreshConfigs:
    """Fresh ZenML configs for tests that run commands as a new user would (under the test
    session's directory, so that servers started there end with it)."""
    return FreshConfigs(zenml_env)

"""examples/custom_flavor: the one-file LitServe flavor, registered with ZenML's own CLI,
passes the conformance suite (real LitServe servers on 127.0.0.1, real ZenML pipelines)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from zenml_model_deployers.testing.conformance import LocalProcessConformance

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "custom_flavor"
sys.path.insert(0, str(EXAMPLE))  # where ZenML finds the flavor's source, as in the guide

from litserve_flavor import LitServeDeployer, LitServeDeploymentService  # noqa: E402


def _zenml(*args: str) -> str:
    """The ZenML CLI, run from the example's folder (its source root), in the test store."""
    out = subprocess.run(
        [str(Path(sys.executable).parent / "zenml"), *args],
        cwd=EXAMPLE,
        env={**os.environ, "PYTHONPATH": str(EXAMPLE)},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, f"zenml {' '.join(args)} failed: {out.stdout}\n{out.stderr}"
    return out.stdout


@pytest.fixture(scope="module")
def litserve_models(zenml_env: Path) -> Path:
    """a and b (different predictions) saved with joblib as the flavor serves them; broken:
    a file that is no model."""
    import joblib
    import numpy as np
    from sklearn.dummy import DummyClassifier

    out = zenml_env / "litserve-models"
    out.mkdir(exist_ok=True)
    x = np.array([[0.0, 1.0], [1.0, 0.0]])
    for variant, constant in (("a", 0), ("b", 1)):
        clf = DummyClassifier(strategy="constant", constant=constant).fit(x, [0, 1])
        joblib.dump(clf, out / f"{variant}.joblib")
    (out / "broken.joblib").write_bytes(b"not a model")
    return out


@pytest.fixture(scope="module")
def litserve_component(zenml_env: Path) -> str:
    """The flavor registered the ZenML way, and a model deployer component of it."""
    _zenml("model-deployer", "flavor", "register", "litserve_flavor.LitServeDeployerFlavor")
    from zenml.client import Client
    from zenml.enums import StackComponentType

    flavor = Client().get_flavor_by_name_and_type("litserve", StackComponentType.MODEL_DEPLOYER)
    assert flavor.source == "litserve_flavor.LitServeDeployerFlavor"
    _zenml(
        "model-deployer", "register", "litserve-test", "--flavor=litserve", "--default_timeout=120"
    )
    return "litserve-test"


def _activate(component: str) -> None:
    from zenml_model_deployers.flavors import ensure_deployer_stack

    ensure_deployer_stack("litserve-test-stack", component, "litserve")


class TestLitServeConformance(LocalProcessConformance):
    """The example's flavor passes the suite every built-in flavor passes."""

    sample_input = [[0.5, 0.5], [0.1, 0.9]]
    name_prefix = "lit"

    @pytest.fixture(autouse=True)
    def _models(self, litserve_models: Path) -> None:
        type(self).models = litserve_models  # type: ignore[attr-defined]

    @pytest.fixture
    def deployer(self, litserve_component: str) -> Any:
        from zenml_model_deployers.flavors import get_deployer

        _activate(litserve_component)
        return get_deployer("litserve")

    @pytest.fixture
    def stack_with_deployer(self, litserve_component: str) -> str:
        _activate(litserve_component)
        return "litserve-test-stack"

    def make_config(self, variant: str, name: str, **overrides: Any) -> Any:
        from litserve_flavor import LitServeDeploymentConfig

        return LitServeDeploymentConfig(
            deployment_name=name,
            model_name=name,
            model_uri=str(self.models / f"{variant}.joblib"),  # type: ignore[attr-defined]
            **overrides,
        )

    def expected(self, variant: str) -> Any:
        return [0, 0] if variant == "a" else [1, 1]


class StopDoesNotStop(LitServeDeploymentService):
    """A flavor bug: stop leaves the server running (module level: ZenML imports it by path)."""

    def stop_backend(self, timeout: float) -> None:
        return None


class StopDoesNotStopDeployer(LitServeDeployer):
    """Deploys with the buggy service."""

    SERVICE_CLASS = StopDoesNotStop


def _unregistered(deployer_cls: type[Any]) -> Any:
    """A deployer of a class that no registered component uses (a flavor under development)."""
    from datetime import UTC, datetime
    from uuid import uuid4

    from zenml.enums import StackComponentType

    flavor = deployer_cls.FLAVOR()
    now = datetime.now(UTC)
    return deployer_cls(
        name="litserve-broken",
        id=uuid4(),
        config=flavor.config_class(),
        flavor=flavor.name,
        type=StackComponentType.MODEL_DEPLOYER,
        user=None,
        created=now,
        updated=now,
    )


def test_a_broken_hook_fails_with_the_guarantee_it_broke(litserve_models: Path) -> None:
    """A flavor whose stop_backend leaves the server running fails the stop/start check, and
    the message names the hook and the guarantee, then what happened."""
    from zenml_model_deployers.testing.conformance import ConformanceFailure

    suite = TestLitServeConformance()
    suite.models = litserve_models  # type: ignore[attr-defined]
    deployer = _unregistered(StopDoesNotStopDeployer)
    state: dict[str, Any] = {"name": "lit-badstop"}
    suite.test_01_deploy_serves(deployer, state)
    try:
        with pytest.raises(ConformanceFailure) as failure:
            suite.test_05_stop_start_same_url(deployer, state)
        message = str(failure.value)
        assert message.startswith("stop_backend / start_backend / check_status broke a guarantee")
        assert "stop stops serving and is reversible" in message
        assert "what happened: AssertionError: assert stopped is not None and" in message
    finally:
        LitServeDeploymentService.stop_backend(state["svc"], 30)  # the real one
        LitServeDeployer.delete(deployer, state["svc"])


def test_run_py_deploys_from_a_pipeline_and_updates_without_a_failed_request(
    zenml_env: Path,
) -> None:
    """examples/custom_flavor/run.py: registers the flavor, deploys a model object from a
    pipeline with model_deployer_step, updates it under load: zero failed requests. The `zmd`
    CLI then manages the custom flavor's deployment like a built-in one."""
    env = {
        **os.environ,
        "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"],
    }
    before = _active_stack(env)
    out = subprocess.run(
        [sys.executable, str(EXAMPLE / "run.py"), "--keep"],
        cwd=zenml_env / "work",
        env=env,
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "revision 2 at http://127.0.0.1:" in out.stdout
    answered = re.search(r"during the update: (\d+) requests answered, (\d+) failed", out.stdout)
    assert answered, out.stdout
    assert int(answered[1]) > 10 and int(answered[2]) == 0, out.stdout
    url = re.search(r"revision 2 at (\S+):", out.stdout)
    assert url
    # It used litserve-stack while it ran, and put back the stack that was active.
    assert _active_stack(env) == before != "litserve-stack"

    def zmd(*args: str) -> str:
        # From the example's folder, where ZenML finds the flavor's classes.
        done = subprocess.run(
            [str(Path(sys.executable).parent / "zmd"), *args],
            cwd=EXAMPLE,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, f"zmd {' '.join(args)}: {done.stdout}{done.stderr}"
        return done.stdout

    listed = json.loads(zmd("models", "list", "--flavor", "litserve", "-o", "json"))
    assert [(d["name"], d["state"], d["revision"], d["url"]) for d in listed] == [
        ("iris-litserve", "running", 2, url[1])
    ]
    zmd("models", "stop", "iris-litserve")
    assert json.loads(zmd("models", "list", "-o", "json"))[0]["state"] == "stopped"
    zmd("models", "start", "iris-litserve")
    from cli_output import assert_machine_readable

    assert_machine_readable("iris-litserve", url[1], cwd=EXAMPLE, ZMD_FAST_LIST="0")
    zmd("models", "delete", "iris-litserve", "-y")
    assert json.loads(zmd("models", "list", "-o", "json")) == []


def _active_stack(env: dict[str, str]) -> str:
    """The active stack's name as a new process sees it (the store's config, not this one's)."""
    code = "from zenml.client import Client; print(Client().active_stack_model.name)"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


NO_PYTEST = """
import sys

sys.modules["pytest"] = None  # as where pytest is not installed
sys.path.insert(0, sys.argv[1])
import run  # the example's imports: the flavor, the steps, the request loop

try:
    import zenml_model_deployers.testing.conformance  # noqa: F401
except ModuleNotFoundError as e:
    print(e)
"""


def test_the_example_needs_no_pytest_and_the_suite_names_its_extra(tmp_path: Path) -> None:
    """`python run.py` where pytest is not installed (a user's environment) imports what it
    needs (it raised ModuleNotFoundError: No module named 'pytest'); the conformance suite,
    a pytest suite, says which extra installs pytest."""
    script = tmp_path / "no_pytest.py"
    script.write_text(NO_PYTEST)
    done = subprocess.run(
        [sys.executable, str(script), str(EXAMPLE)],
        cwd=EXAMPLE,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert 'pip install "zenml-model-deployers[testing]"' in done.stdout, done.stdout

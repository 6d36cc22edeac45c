"""zmd-bentoml beyond the conformance suite: real BentoML 1.4 servers on 127.0.0.1."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
from sklearn.dummy import DummyClassifier
from zenml import step

from zenml_model_deployers.errors import ConfigurationError, DeploymentError, PredictionError
from zenml_model_deployers.flavors.bentoml.config import BentoMLDeploymentConfig


@step
def train(constant: int) -> DummyClassifier:
    """A constant classifier (its predictions tell which model serves)."""
    return DummyClassifier(strategy="constant", constant=constant).fit(
        [[0.0, 1.0], [1.0, 0.0]], [0, 1]
    )


@step
def train_obj() -> DummyClassifier:
    """A one-feature constant classifier."""
    return DummyClassifier(strategy="constant", constant=1).fit([[0.0], [1.0]], [0, 1])


def _cfg(name: str, tag: str, **kw: Any) -> BentoMLDeploymentConfig:
    return BentoMLDeploymentConfig(deployment_name=name, model_name=name, model_uri=tag, **kw)


def _workdir(name: str) -> Path:
    from zenml_model_deployers.local.service import zmd_home

    return zmd_home() / "local" / "zmd-bentoml" / name


def _bentoml_servers_in(workdir: Path) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline", "cwd"]):
        try:
            if p.info["cwd"] == str(workdir) and "bentoml" in " ".join(p.info["cmdline"] or []):
                out.append(p)
        except psutil.Error:
            continue
    return out


def test_import_failure_is_a_typed_error_with_bentomls_words(
    bentoml_deployer: Any, bentos: dict[str, str]
) -> None:
    with pytest.raises(DeploymentError) as err:
        bentoml_deployer.deploy(_cfg("bento-import-fail", bentos["broken"]), timeout=60)
    # BentoML's own line, not a generic timeout.
    assert "No module named 'zmd_build_only_helper'" in str(err.value)
    assert err.value.backend_message and "Failed to import module" in err.value.backend_message
    assert bentoml_deployer.find_deployment("bento-import-fail") is None
    assert _bentoml_servers_in(_workdir("bento-import-fail")) == []
    # Only the failed revision's log is left, at the path the error names.
    assert [p.name for p in _workdir("bento-import-fail").iterdir()] == ["failed"]
    assert f"full log: {_workdir('bento-import-fail')}/failed/" in str(err.value)
    assert str(err.value).splitlines()[0] == (
        "BentoML cannot import the service module 'svc_broken': "
        "No module named 'zmd_build_only_helper'"
    )


def test_missing_tag_fails_before_anything_starts(bentoml_deployer: Any) -> None:
    t0 = time.monotonic()
    with pytest.raises(ConfigurationError) as err:
        bentoml_deployer.deploy(_cfg("bento-missing", "no_such_bento:abc123"), timeout=60)
    assert time.monotonic() - t0 < 5
    assert "no_such_bento:abc123" in str(err.value) and "bentoml list" in str(err.value)
    assert err.value.backend_message  # BentoML's NotFound message
    assert bentoml_deployer.find_deployment("bento-missing") is None
    assert not _workdir("bento-missing").exists()


def test_unknown_api_fails_before_anything_starts(
    bentoml_deployer: Any, bentos: dict[str, str]
) -> None:
    with pytest.raises(ConfigurationError, match="no API 'nope'"):
        bentoml_deployer.deploy(_cfg("bento-api", bentos["a"], api="nope"), timeout=60)
    assert bentoml_deployer.find_deployment("bento-api") is None


def test_containerize_without_docker_engine_is_a_clear_error(
    bentoml_deployer: Any, bentos: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from zenml_model_deployers.flavors.bentoml import packaging

    if packaging.docker_engine_error() is None:
        pytest.skip("a Docker engine answers here")
    with pytest.raises(ConfigurationError) as err:
        bentoml_deployer.deploy(_cfg("bento-docker", bentos["a"], containerize=True), timeout=60)
    assert "Docker engine" in str(err.value) and "containerize=False" in str(err.value)
    assert bentoml_deployer.find_deployment("bento-docker") is None


def test_named_apis_latest_tag_and_readyz(bentoml_deployer: Any, bentos: dict[str, str]) -> None:
    name_only = bentos["a"].split(":")[0]  # `name` means the store's latest
    svc = bentoml_deployer.deploy(_cfg("bento-apis", bentos["a"]), timeout=60)
    try:
        assert svc.config.model_uri == bentos["a"]
        assert name_only
        assert svc.prediction_url.endswith("/classify")  # the first API by default
        assert svc.healthcheck_url.endswith("/readyz")
        assert requests.get(svc.healthcheck_url, timeout=5).status_code == 200
        assert svc.predict([[1.0, 2.0]], api="classify") == [0]
        assert svc.predict({"text": "ab", "times": 2}, api="echo") == "abab"
        import numpy as np
        import pandas as pd

        assert svc.predict(np.array([[1.0, 2.0]])) == [0]
        assert svc.predict(pd.DataFrame([[1.0, 2.0]]).values) == [0]
        with pytest.raises(PredictionError, match="no API 'missing'"):
            svc.predict([[1.0]], api="missing")
        with pytest.raises(PredictionError) as err:
            svc.predict({"text": 3, "times": "x"}, api="echo")
        assert "HTTP 400" in str(err.value)
        assert svc.describe()["apis"] == {
            "classify": svc.status.url + "/classify",
            "echo": svc.status.url + "/echo",
        }
        assert svc.curl_example() == (
            f"curl -s -X POST {svc.prediction_url} -H 'Content-Type: application/json' "
            '-d \'{"input_data": "..."}\''
        )
        logs = "\n".join(svc.get_logs())
        assert "Service ZmdTestService initialized" in logs
        # The real `zmd`, ZenML's path at DEBUG: stdout carries the URL / the JSON alone.
        from cli_output import assert_machine_readable

        assert_machine_readable(
            "bento-apis", svc.prediction_url, ZMD_FAST_LIST="0", ZENML_LOGGING_VERBOSITY="DEBUG"
        )

        # A killed `bentoml serve` (and its workers) is restarted by the front, same URL.
        server = psutil.Process(svc.status.server.pid)
        for p in [server, *server.children(recursive=True)]:
            p.kill()
        deadline = time.monotonic() + 60
        while (healed := bentoml_deployer.find_deployment("bento-apis")).status.restarts != 1:
            assert time.monotonic() < deadline, healed.status
            time.sleep(0.5)
        assert healed.status.state.value == "active" and healed.prediction_url == svc.prediction_url
        assert healed.predict([[1.0, 2.0]], api="classify") == [0]
    finally:
        bentoml_deployer.delete(bentoml_deployer.find_deployment("bento-apis") or svc)


def test_pipeline_builds_serves_reuses_and_updates(bentoml_stack: str, zenml_env: Path) -> None:
    """bento_builder_step + bentoml_deployer_step: metadata, the bento artifact, no restart for
    an unchanged model, an in-place update for a new one."""
    import bentoml
    from zenml import pipeline
    from zenml.client import Client
    from zenml_model_deployers.steps import bento_builder_step, bentoml_deployer_step

    from zenml_model_deployers.flavors import get_deployer

    src = zenml_env / "bento-pipeline"
    src.mkdir(exist_ok=True)
    (src / "my_service.py").write_text(
        "import bentoml\nimport numpy as np\n\n"
        "@bentoml.service\nclass PipeService:\n"
        '    ref = bentoml.models.BentoModel("pipe_model:latest")\n\n'
        "    def __init__(self) -> None:\n"
        "        self.model = bentoml.sklearn.load_model(self.ref)\n\n"
        "    @bentoml.api\n"
        "    def classify(self, input_data: np.ndarray) -> np.ndarray:\n"
        "        return self.model.predict(input_data)\n"
    )

    @pipeline(enable_cache=False)
    def bento_pipeline(constant: int) -> None:
        bento = bento_builder_step(
            model=train(constant),
            service="my_service.py:PipeService",
            model_name="pipe_model",
            working_dir=str(src),
        )
        bentoml_deployer_step(bento=bento, deployment_name="bento-pipe", timeout=60)

    deployer = get_deployer("zmd-bentoml")
    try:
        run1 = bento_pipeline.with_options(run_name="bento-pipe-1")(constant=0)
        steps = Client().get_pipeline_run(run1.id).steps
        url = steps["bentoml_deployer_step"].run_metadata["deployed_model_url"]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/classify")
        assert requests.post(url, json={"input_data": [[1.0, 1.0]]}, timeout=10).json() == [0]
        bento = steps["bento_builder_step"].outputs["bento"][0].load()
        assert isinstance(bento, bentoml.Bento)
        svc = steps["bentoml_deployer_step"].outputs["bentoml_deployment"][0].load()
        assert svc.prediction_url == url and svc.config.model_uri == str(bento.tag)

        # Unchanged model: same bento, nothing restarts.
        pid = svc.status.server.pid
        run2 = bento_pipeline.with_options(run_name="bento-pipe-2")(constant=0)
        again = deployer.find_deployment("bento-pipe")
        assert again.status.server.pid == pid and again.status.revision == 1
        built2 = Client().get_pipeline_run(run2.id).steps["bento_builder_step"]
        assert built2.run_metadata["bento_tag"] == str(bento.tag)

        # A new model: a new bento rolled out on the same URL.
        bento_pipeline.with_options(run_name="bento-pipe-3")(constant=1)
        new = deployer.find_deployment("bento-pipe")
        assert new.prediction_url == url and new.status.revision == 2
        assert new.predict([[1.0, 1.0]]) == [1]

        # The bento artifact travels: removed from the store, loading imports it back.
        bentoml.bentos.delete(str(bento.tag))
        back = Client().get_pipeline_run(run1.id).steps["bento_builder_step"].outputs["bento"][0]
        assert str(back.load().tag) == str(bento.tag)

        # Recreate run 1's deployment where its bento is gone: imported from the run's artifact.
        from zenml_model_deployers.recreate import recreate

        deployer.delete(deployer.find_deployment("bento-pipe"))
        bentoml.bentos.delete(str(bento.tag))
        recorded = steps["bentoml_deployer_step"].outputs["bentoml_deployment"][0].load()
        again = recreate(recorded, timeout=60)
        assert again.config.model_uri == str(bento.tag)
        assert again.predict([[1.0, 1.0]]) == [0]
    finally:
        found = deployer.find_deployment("bento-pipe")
        if found is not None:
            deployer.delete(found)


def test_model_deployer_step_with_a_model_object(bentoml_stack: str) -> None:
    """The stack's deployer is zmd-bentoml: a plain model object gets a generated service."""
    from zenml import pipeline
    from zenml.client import Client
    from zenml_model_deployers.steps import model_deployer_step

    from zenml_model_deployers.flavors import get_deployer

    @pipeline(enable_cache=False)
    def generic_bento() -> None:
        model_deployer_step(model=train_obj(), deployment_name="bento-generic", timeout=60)

    try:
        run = generic_bento.with_options(run_name="bento-generic-1")()
        md = Client().get_pipeline_run(run.id).steps["model_deployer_step"].run_metadata
        assert md["deployment"]["flavor"] == "zmd-bentoml"
        assert md["deployed_model_url"].endswith("/predict")
        svc = get_deployer("zmd-bentoml").find_deployment("bento-generic")
        assert svc.predict([[0.3], [0.7]]) == [1, 1]
    finally:
        found = get_deployer("zmd-bentoml").find_deployment("bento-generic")
        if found is not None:
            get_deployer("zmd-bentoml").delete(found)


def test_the_example_runs_end_to_end(zenml_env: Path) -> None:
    """`python examples/bentoml/run.py` as a user runs it (own process, this isolated store)."""
    import subprocess
    import sys

    from zenml_model_deployers.flavors import get_deployer

    script = Path(__file__).resolve().parents[1] / "examples" / "bentoml" / "run.py"
    try:
        done = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        assert "deployed_model_url (from run metadata): http://127.0.0.1:" in done.stdout
        assert "service.predict(rows, api='classify') -> [0, 2]" in done.stdout
    finally:
        svc = get_deployer("zmd-bentoml").find_deployment("iris-bento")
        if svc is not None:
            get_deployer("zmd-bentoml").delete(svc)


def test_start_refused_for_a_deleted_bento_keeps_the_state(bentoml_deployer: Any) -> None:
    """The bento of a stopped deployment was removed from the store: `start` fails with a
    ConfigurationError before anything starts, and the deployment stays stopped (not ERROR)."""
    import bentoml

    from zenml_model_deployers.flavors.bentoml.packaging import build_bento

    src = Path.cwd() / "bento-gone"
    src.mkdir(exist_ok=True)
    (src / "svc_gone.py").write_text(
        "import bentoml\n\n@bentoml.service\nclass GoneService:\n"
        "    @bentoml.api\n    def ping(self, text: str) -> str:\n        return text\n"
    )
    tag = build_bento("svc_gone.py:GoneService", [], working_dir=str(src))
    svc = bentoml_deployer.deploy(_cfg("bento-gone", tag), timeout=60)
    try:
        assert svc.predict("hi") == "hi"
        bentoml_deployer.stop(svc)
        bentoml.bentos.delete(tag)
        stopped = bentoml_deployer.find_deployment("bento-gone")
        with pytest.raises(ConfigurationError, match="not in the local BentoML store"):
            bentoml_deployer.start(stopped, 60)
        again = bentoml_deployer.find_deployment("bento-gone")
        assert again.status.state.value == "inactive"
        assert "start refused" in again.status.last_error
    finally:
        found = bentoml_deployer.find_deployment("bento-gone")
        if found is not None:
            bentoml_deployer.delete(found)


def test_an_older_bento_serves_the_model_it_was_built_with(bentoml_deployer: Any) -> None:
    """A service loading `BentoModel("name:latest")`: deploying (or restarting) an older bento
    after a newer model was saved must serve the older bento's model, not the store's latest."""
    from zenml_model_deployers.flavors.bentoml.packaging import build_bento, save_model

    src = Path.cwd() / "bento-pin"
    src.mkdir(exist_ok=True)
    (src / "svc_pin.py").write_text(
        "import bentoml\nimport numpy as np\n\n@bentoml.service\nclass PinService:\n"
        '    ref = bentoml.models.BentoModel("zmdtest_pin:latest")\n\n'
        "    def __init__(self) -> None:\n"
        "        self.model = bentoml.sklearn.load_model(self.ref)\n\n"
        "    @bentoml.api\n"
        "    def classify(self, input_data: np.ndarray) -> np.ndarray:\n"
        "        return self.model.predict(input_data)\n"
    )
    tags = []
    for constant in (0, 1):  # the second model is the store's latest
        clf = DummyClassifier(strategy="constant", constant=constant).fit([[0.0], [1.0]], [0, 1])
        tags.append(
            build_bento(
                "svc_pin.py:PinService", [save_model(clf, "zmdtest_pin")], working_dir=str(src)
            )
        )
    svc = bentoml_deployer.deploy(_cfg("bento-pin", tags[0]), timeout=60)
    try:
        assert svc.predict([[0.5]]) == [0]
        bentoml_deployer.stop(svc)
        again = bentoml_deployer.start(bentoml_deployer.find_deployment("bento-pin"), 60)
        assert again.predict([[0.5]]) == [0]
        newer = bentoml_deployer.deploy(_cfg("bento-pin", tags[1]), timeout=60)
        assert newer.predict([[0.5]]) == [1]
        assert [p.name for p in newer.workdir.glob("store-*")] == [f"store-{tags[1].split(':')[1]}"]
    finally:
        found = bentoml_deployer.find_deployment("bento-pin")
        if found is not None:
            bentoml_deployer.delete(found)


def test_an_unreachable_package_index_says_how_to_build_anyway(
    zenml_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BentoML locks requirements against the index at build time; offline, the error says
    how to build without locking (and that works)."""
    from zenml_model_deployers.flavors.bentoml.packaging import build_bento

    src = zenml_env / "bento-offline"
    src.mkdir(exist_ok=True)
    (src / "svc_offline.py").write_text(
        "import bentoml\n\n@bentoml.service\nclass OfflineService:\n"
        "    @bentoml.api\n    def ping(self, text: str) -> str:\n        return text\n"
    )
    for var in ("UV_INDEX_URL", "PIP_INDEX_URL", "UV_DEFAULT_INDEX"):
        monkeypatch.setenv(var, "http://127.0.0.1:9/simple")
    with pytest.raises(DeploymentError) as err:
        build_bento("svc_offline.py:OfflineService", [], working_dir=str(src))
    assert "lock_packages': False" in str(err.value)
    assert "Failed to lock PyPI packages" in str(err.value)
    tag = build_bento(
        "svc_offline.py:OfflineService",
        [],
        working_dir=str(src),
        python={"lock_packages": False},
    )
    assert tag.startswith("offline_service:")

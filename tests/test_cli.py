"""`zmd` and ZenML's own `zenml model-deployer models ...` on our deployments."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner

from zenml_model_deployers import cli, lookup
from zenml_model_deployers.cli import main as zmd
from zenml_model_deployers.errors import DeploymentError, DeploymentNotFoundError
from zenml_model_deployers.flavors.mlflow.config import MLflowDeploymentConfig


@pytest.fixture(scope="module")
def deployed(mlflow_deployer: Any, models_dir: Path) -> Iterator[Any]:
    cfg = MLflowDeploymentConfig(
        deployment_name="cli-demo", model_name="cli-model", model_uri=str(models_dir / "a")
    )
    svc = mlflow_deployer.deploy(cfg, timeout=120)
    yield svc
    found = mlflow_deployer.find_deployment("cli-demo")
    if found is not None:
        mlflow_deployer.delete(found)


def test_list_json_and_filters(deployed: Any) -> None:
    r = CliRunner()
    rows = json.loads(r.invoke(zmd, ["models", "list", "-o", "json"]).output)
    row = next(x for x in rows if x["name"] == "cli-demo")
    assert row["state"] == "running" and row["url"] == deployed.prediction_url
    assert row["flavor"] == "zmd-mlflow" and row["model"] == "cli-model"
    assert (
        json.loads(r.invoke(zmd, ["models", "list", "-o", "json", "--flavor", "zmd-vllm"]).output)
        == []
    )
    nope = r.invoke(zmd, ["models", "list", "-o", "json", "--flavor", "zmd-nope"])
    assert nope.exit_code == 1 and "Unknown model deployer flavor 'zmd-nope'" in nope.output
    only = json.loads(
        r.invoke(zmd, ["models", "list", "-o", "json", "--model", "cli-model"]).output
    )
    assert [x["name"] for x in only] == ["cli-demo"]
    assert "cli-demo" in r.invoke(zmd, ["models", "list"]).output


def test_fast_list_shows_what_zenmls_client_shows(deployed: Any, models_dir: Path) -> None:
    from zenml_model_deployers.local.fastlist import list_local_rows

    assert list_local_rows() is not None, "the local SQLite fast path should apply here"
    r = CliRunner()
    fast = json.loads(r.invoke(zmd, ["models", "list", "-o", "json"]).output)
    slow = json.loads(
        r.invoke(zmd, ["models", "list", "-o", "json"], env={"ZMD_FAST_LIST": "0"}).output
    )
    assert fast == slow and any(x["name"] == "cli-demo" for x in fast)
    filtered = r.invoke(zmd, ["models", "list", "-o", "json", "--flavor", "zmd-mlflow"])
    assert json.loads(filtered.output) == [x for x in slow if x["flavor"] == "zmd-mlflow"]


def test_describe_get_url_logs_by_name_and_id_prefix(deployed: Any) -> None:
    r = CliRunner()
    url = r.invoke(zmd, ["models", "get-url", str(deployed.uuid)[:8]]).output.strip()
    assert url == deployed.prediction_url
    desc = json.loads(r.invoke(zmd, ["models", "describe", "cli-demo", "-o", "json"]).output)
    assert desc["url"] == url and desc["config_hash"] == deployed.status.config_hash
    requests.post(url, json={"inputs": [[1, 2]]}, timeout=10)
    logs = r.invoke(zmd, ["models", "logs", "cli-demo", "--tail", "50"]).output
    assert "/invocations" in logs


def test_fast_describe_get_url_logs_say_what_zenmls_client_says(deployed: Any) -> None:
    """describe, get-url and logs read the store without ZenML; the same output as ZenML's
    client path (ZMD_FAST_LIST=0), by name and by id prefix, and the same errors."""
    from zenml_model_deployers.local.fastlist import describe_row, local_rows

    rows = local_rows()
    assert rows is not None, "the local SQLite fast path should apply here"
    assert describe_row(next(x for x in rows if x["name"] == "cli-demo")) is not None
    requests.post(deployed.prediction_url, json={"inputs": [[1, 2]]}, timeout=10)
    r = CliRunner()
    slow_env = {"ZMD_FAST_LIST": "0"}
    for args in (
        ["models", "describe", "cli-demo", "-o", "json"],
        ["models", "describe", str(deployed.uuid)[:8]],
        ["models", "get-url", "cli-demo"],
        ["models", "get-url", str(deployed.uuid)[:6], "--flavor", "zmd-mlflow"],
        ["models", "logs", "cli-demo", "--tail", "5"],
        ["models", "logs", "cli-demo"],
        ["models", "describe", "no-such-deployment"],
        ["models", "get-url", "zzz-nope", "--flavor", "zmd-mlflow"],
    ):
        fast, slow = r.invoke(zmd, args), r.invoke(zmd, args, env=slow_env)
        assert (fast.exit_code, fast.output) == (slow.exit_code, slow.output), args
    desc = json.loads(r.invoke(zmd, ["models", "describe", "cli-demo", "-o", "json"]).output)
    assert desc["state"] == "running" and desc["restarts"] == 0
    assert desc["config"]["model_uri"] == deployed.config.model_uri


def test_works_where_zenml_cannot_find_a_source_root(deployed: Any) -> None:
    """`python -c` (like a notebook) has no main file: our classes still load."""
    code = (
        "import sys; from zenml_model_deployers.cli import main; "
        "sys.argv = ['zmd', 'models', 'get-url', 'cli-demo']; main()"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "ZMD_FAST_LIST": "0"},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == deployed.prediction_url


def test_predict_accepts_arrays_lists_and_ready_payloads(deployed: Any) -> None:
    import numpy as np

    from zenml_model_deployers.errors import PredictionError

    assert deployed.predict(np.array([[1.0, 2.0], [3.0, 4.0]])) == [0, 0]
    assert deployed.predict([[1.0, 2.0]]) == [0]
    assert deployed.predict({"inputs": [[1.0, 2.0]]}) == [0]
    with pytest.raises(PredictionError) as err:
        deployed.predict({"nonsense": 1})
    assert "HTTP 400" in str(err.value) and err.value.backend_message


def test_stop_and_start(deployed: Any) -> None:
    r = CliRunner()
    assert r.invoke(zmd, ["models", "stop", "cli-demo"]).exit_code == 0
    row = next(
        x
        for x in json.loads(r.invoke(zmd, ["models", "list", "-o", "json"]).output)
        if x["name"] == "cli-demo"
    )
    assert row["state"] == "stopped"
    assert r.invoke(zmd, ["models", "start", "cli-demo"]).exit_code == 0
    assert requests.post(deployed.prediction_url, json={"inputs": [[1, 2]]}, timeout=10).json() == {
        "predictions": [0]
    }


def test_zenml_cli_sees_our_services(deployed: Any, mlflow_stack: str) -> None:
    # ZenML's CLI reads the active stack's model deployer: the zmd-mlflow stack, made active
    # here (a session-scoped deployer fixture activates it only when first created).
    from zenml.cli.cli import cli as zenml_cli

    r = CliRunner()
    out = r.invoke(zenml_cli, ["model-deployer", "models", "list"])
    assert out.exit_code == 0, out.output
    assert str(deployed.uuid)[:8] in out.output
    out = r.invoke(zenml_cli, ["model-deployer", "models", "get-url", str(deployed.uuid)])
    assert out.exit_code == 0 and deployed.prediction_url in out.output.replace("\n", "")
    out = r.invoke(zenml_cli, ["model-deployer", "models", "describe", str(deployed.uuid)])
    assert out.exit_code == 0 and "CONFIG_HASH" in out.output


def test_zenml_cli_delete(mlflow_deployer: Any, mlflow_stack: str, models_dir: Path) -> None:
    from zenml.cli.cli import cli as zenml_cli

    cfg = MLflowDeploymentConfig(deployment_name="zenml-cli-del", model_uri=str(models_dir / "b"))
    svc = mlflow_deployer.deploy(cfg, timeout=120)
    out = CliRunner().invoke(zenml_cli, ["model-deployer", "models", "delete", str(svc.uuid), "-y"])
    assert out.exit_code == 0, out.output
    assert mlflow_deployer.find_deployment("zenml-cli-del") is None
    assert not svc.status.server.is_alive() and not svc.status.relay.is_alive()


def test_errors_are_one_line_and_nonzero() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "zenml_model_deployers.cli", "models", "describe", "no-such-thing"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("Error: No deployment matches 'no-such-thing'")
    assert "Traceback" not in proc.stderr


def test_recreate_from_a_run(mlflow_stack: str, models_dir: Path, mlflow_deployer: Any) -> None:
    from zenml import pipeline
    from zenml_model_deployers.steps import mlflow_deployer_step

    @pipeline(enable_cache=False)
    def cli_recreate_pipeline() -> None:
        mlflow_deployer_step(
            model_uri=str(models_dir / "b"), deployment_name="recreated", timeout=120
        )

    run = cli_recreate_pipeline.with_options(run_name="cli-recreate-run")()
    assert run is not None
    recorded = mlflow_deployer.find_deployment("recreated")
    url = recorded.prediction_url
    r = CliRunner()
    try:
        # A later revision serves; recreating the run rolls back to what the run deployed.
        later = MLflowDeploymentConfig(deployment_name="recreated", model_uri=str(models_dir / "a"))
        assert mlflow_deployer.deploy(later, timeout=120).predict([[1.0, 1.0]]) == [0]
        res = r.invoke(zmd, ["models", "recreate", "--run", "cli-recreate-run"])
        assert res.exit_code == 0, res.output
        back = mlflow_deployer.find_deployment("recreated")
        assert back.status.config_hash == recorded.status.config_hash
        assert back.prediction_url == url and back.predict([[1.0, 1.0]]) == [1]
        # The deployment is deleted (row and server): recreate brings it back on the same URL.
        mlflow_deployer.delete(back)
        res = r.invoke(zmd, ["models", "recreate", "--run", "cli-recreate-run"])
        assert res.exit_code == 0, res.output
        again = mlflow_deployer.find_deployment("recreated")
        assert again is not None and again.status.config_hash == recorded.status.config_hash
        assert again.prediction_url == url and again.predict([[1.0, 1.0]]) == [1]
    finally:
        svc = mlflow_deployer.find_deployment("recreated")
        if svc is not None:
            mlflow_deployer.delete(svc)
    bad = r.invoke(zmd, ["models", "recreate", "--run", str(run.id), "--step", "nope"])
    assert bad.exit_code == 1 and "No service artifact" in bad.output


def test_fast_list_of_a_local_flavor_ignores_remote_rows(deployed: Any) -> None:
    """A remote deployment's row sends the unfiltered list to the client path (its state is read
    from its API), but `--flavor zmd-mlflow` stays on the fast path."""
    from zenml.client import Client

    from zenml_model_deployers.flavors.huggingface.config import HuggingFaceDeploymentConfig
    from zenml_model_deployers.flavors.huggingface.service import HuggingFaceDeploymentService
    from zenml_model_deployers.local.fastlist import list_local_rows

    cfg = HuggingFaceDeploymentConfig(deployment_name="remote-row", model_uri="org/model")
    row = Client().create_service(
        config=cfg, service_type=HuggingFaceDeploymentService.SERVICE_TYPE
    )
    source = "zenml_model_deployers.flavors.huggingface.service.HuggingFaceDeploymentService"
    Client().update_service(row.id, service_source=source)
    try:
        assert list_local_rows() is None
        rows = list_local_rows(flavor="zmd-mlflow")
        assert rows is not None and any(x["name"] == "cli-demo" for x in rows)
        # A command about one local deployment stays on the fast path (describe, logs, start);
        # one about the remote deployment, or an ambiguous prefix, is resolved as ZenML would.
        local = lookup.fast_row("cli-demo", None)
        assert local is not None and local["flavor"] == "zmd-mlflow" and local["state"]
        assert lookup.fast_row("remote-row", None) is None
        assert lookup.fast_row(str(row.id), None) is None
        with pytest.raises(DeploymentNotFoundError):
            lookup.fast_row("no-such-deployment", None)
        described = CliRunner().invoke(zmd, ["models", "describe", "cli-demo", "-o", "json"])
        assert described.exit_code == 0, described.output
    finally:
        Client().delete_service(row.id)


def test_fast_path_inside_a_zenml_init_project(
    deployed: Any, zenml_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a `zenml init` project, list/describe/get-url/logs stay on the fast path (no ZenML
    import, no 3-20 s) and say what ZenML's client path says there -- for the project the
    repository's config names, which is not always the global one."""
    from zenml.client import Client

    from zenml_model_deployers.local.fastlist import list_local_rows

    assert list_local_rows() is not None, "the fast path should apply in a repository"
    r = CliRunner()

    def took_zenml(*a: Any, **k: Any) -> Any:
        raise AssertionError("took ZenML's path")

    def both(args: list[str]) -> tuple[Any, Any]:
        with monkeypatch.context() as m:
            m.setattr(cli, "all_services", took_zenml)
            fast = r.invoke(zmd, args)
        return fast, r.invoke(zmd, args, env={"ZMD_FAST_LIST": "0"})

    for args in (
        ["models", "list", "-o", "json"],
        ["models", "describe", "cli-demo", "-o", "json"],
        ["models", "get-url", "cli-demo"],
        ["models", "get-url", str(deployed.uuid)[:8], "--flavor", "zmd-mlflow"],
        ["models", "logs", "cli-demo", "--tail", "5"],
        ["models", "get-url", "zzz-nope"],
    ):
        fast, slow = both(args)
        assert (fast.exit_code, fast.output) == (slow.exit_code, slow.output), args
    fast, _ = both(["models", "get-url", "cli-demo"])
    assert fast.output.strip() == deployed.prediction_url

    # The repository pins another project (`zenml project set` inside it): the fast path reads
    # that project's rows (none), as ZenML does; the global config still names the first one.
    before = Client().active_project.id
    other = Client().create_project("zmd-repo-project", "a project a repository pins")
    Client().set_active_project(other.id)
    try:
        for args in (["models", "list", "-o", "json"], ["models", "get-url", "cli-demo"]):
            fast, slow = both(args)
            assert (fast.exit_code, fast.output) == (slow.exit_code, slow.output), args
        assert json.loads(both(["models", "list", "-o", "json"])[0].output) == []
    finally:
        Client().set_active_project(before)
        Client().delete_project(other.id)
    # A project the store no longer has, or none named yet: ZenML picks one (and writes it),
    # so that is left to ZenML's path.
    config = zenml_repo / ".zen" / "config.yaml"
    kept = config.read_text()
    try:
        config.write_text(kept.replace(str(before), str(other.id)))
        assert list_local_rows() is None
        config.write_text("{}\n")
        assert list_local_rows() is None
    finally:
        config.write_text(kept)
    assert list_local_rows() is not None


EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "custom_flavor"


def test_an_unknown_flavor_is_an_error_naming_the_closest(
    deployed: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--flavor zmd-mlfow` (a typo) is an error naming zmd-mlflow and the known flavors, the
    same on the fast path and ZenML's, not "No deployments." with exit 0; `get_deployer` says
    the same. A user's own flavor registered in ZenML (the custom-flavor example's `litserve`)
    is known."""
    from zenml.client import Client
    from zenml.enums import StackComponentType

    from zenml_model_deployers.errors import ConfigurationError
    from zenml_model_deployers.flavors import get_deployer

    r = CliRunner()
    slow_env = {"ZMD_FAST_LIST": "0"}

    def same_on_both_paths(args: list[str]) -> Any:
        with monkeypatch.context() as m:
            m.setattr(cli, "all_services", lambda *a, **k: pytest.fail("took ZenML's path"))
            fast = r.invoke(zmd, args)
        slow = r.invoke(zmd, args, env=slow_env)
        assert (fast.exit_code, fast.output) == (slow.exit_code, slow.output), args
        return fast

    for args in (
        ["models", "list", "--flavor", "zmd-mlfow"],
        ["models", "list", "-o", "json", "--flavor", "zmd-mlfow"],
        ["models", "get-url", "cli-demo", "--flavor", "zmd-mlfow"],
    ):
        res = same_on_both_paths(args)
        assert res.exit_code == 1, res.output
        assert "Unknown model deployer flavor 'zmd-mlfow'" in res.output
        assert "did you mean 'zmd-mlflow'?" in res.output and "zmd-kserve" in res.output
    # One of ours with no deployment is no error: nothing to list.
    assert (
        json.loads(
            same_on_both_paths(["models", "list", "-o", "json", "--flavor", "zmd-vllm"]).output
        )
        == []
    )
    with pytest.raises(ConfigurationError, match="did you mean 'zmd-mlflow'") as err:
        get_deployer("zmd-mlfow")
    assert "--flavor=zmd-mlfow" not in str(err.value)

    monkeypatch.syspath_prepend(str(EXAMPLE))
    # The example's own tests may have registered it in this worker's store already (the suite's
    # order is by file length, not by name): use it then, and leave it as found.
    try:
        flavor = Client().get_flavor_by_name_and_type("litserve", StackComponentType.MODEL_DEPLOYER)
        created = False
    except KeyError:
        flavor = Client().create_flavor(
            source="litserve_flavor.LitServeDeployerFlavor",
            component_type=StackComponentType.MODEL_DEPLOYER,
        )
        created = True
    try:
        assert flavor.name == "litserve"
        listed = same_on_both_paths(["models", "list", "-o", "json", "--flavor", "litserve"])
        assert listed.exit_code == 0, listed.output
        assert all(row["flavor"] == "litserve" for row in json.loads(listed.output))
        typo = same_on_both_paths(["models", "list", "--flavor", "litserv"])
        assert typo.exit_code == 1 and "did you mean 'litserve'?" in typo.output
        if created:
            with pytest.raises(DeploymentError, match="No model deployer of flavor litserve"):
                get_deployer("litserve")  # known: what is missing is a component of it
        else:  # the example's tests registered a component of it too
            assert type(get_deployer("litserve")).__name__ == "LitServeDeployer"
    finally:
        if created:
            Client().delete_flavor(flavor.id)


def test_a_retried_canary_clears_its_failure_and_promote_rollback_say_it_once(
    mlflow_deployer: Any, models_dir: Path, tmp_path: Path
) -> None:
    """A canary that failed (its model was not there yet), then the same revision again once it
    is: `describe` no longer says "canary ... failed". `promote` and `rollback` print their
    result once (the CLI's line; the deployer's log line said it a second time)."""
    import shutil

    name, late = "cli-canary", tmp_path / "late-model"
    cfg = MLflowDeploymentConfig(deployment_name=name, model_uri=str(models_dir / "a"))
    candidate = MLflowDeploymentConfig(deployment_name=name, model_uri=str(late))
    r = CliRunner()

    def status_message() -> str:
        res = r.invoke(zmd, ["models", "describe", name, "-o", "json"])
        assert res.exit_code == 0, res.output
        return str(json.loads(res.output)["status_message"])

    def zmd_process(*args: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "zenml_model_deployers.cli", "models", *args],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "ZENML_LOGGING_VERBOSITY": "INFO"},  # a user's default
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout + proc.stderr

    mlflow_deployer.deploy(cfg, timeout=120)
    try:
        with pytest.raises(DeploymentError):
            mlflow_deployer.deploy(candidate, canary_percent=30, timeout=60)
        assert status_message().startswith(f"canary of {candidate.config_hash()} at 30% failed")
        shutil.copytree(models_dir / "b", late)  # the same revision, now loadable
        mlflow_deployer.deploy(candidate, canary_percent=30, timeout=120)
        assert status_message() == ""

        said = zmd_process("promote", name)
        assert said.count("promoted") == 1, said
        mlflow_deployer.deploy(cfg, canary_percent=30, timeout=120)
        said = zmd_process("rollback", name)
        assert said.count("rolled back") == 1, said
    finally:
        found = mlflow_deployer.find_deployment(name)
        if found is not None:
            mlflow_deployer.delete(found)


def test_stdout_carries_only_the_result(deployed: Any) -> None:
    """The real `zmd` in a shell: `get-url` prints the URL alone, `-o json` parses, on the
    fast path and on ZenML's, whose log handler writes to stdout (at DEBUG: a user debugging
    still pipes `get-url` into curl)."""
    from cli_output import assert_machine_readable

    for env in ({}, {"ZMD_FAST_LIST": "0", "ZENML_LOGGING_VERBOSITY": "DEBUG"}):
        info = assert_machine_readable("cli-demo", deployed.prediction_url, **env)
        assert info["flavor"] == "zmd-mlflow"


def test_a_deployment_whose_class_cannot_import_here_is_never_taken_for_gone(
    deployed: Any, models_dir: Path
) -> None:
    """A custom flavor's deployment seen from a folder where its module does not import: `stop`
    and `delete` say it exists and what to do, exit 1 (`delete` said "nothing to delete" and
    exited 0 while it kept running); `list` warns and shows the rest."""
    from zenml.client import Client

    from zenml_model_deployers.flavors.mlflow.service import MLflowDeploymentService

    cfg = MLflowDeploymentConfig(deployment_name="ghost", model_uri=str(models_dir / "a"))
    row = Client().create_service(config=cfg, service_type=MLflowDeploymentService.SERVICE_TYPE)
    Client().update_service(
        row.id,
        service_source="zmd_ghost_flavor.GhostService",
        labels={"zmd_deployment": "ghost", "zmd_flavor": "ghost"},
    )
    r = CliRunner()
    try:
        for env in ({}, {"ZMD_FAST_LIST": "0"}):
            for args in (["models", "delete", "ghost", "-y"], ["models", "stop", "ghost"]):
                res = r.invoke(zmd, args, env=env)
                assert res.exit_code == 1, (args, res.output)
                assert "Deployment 'ghost' (ghost, " in res.output, res.output
                assert "cannot be imported here" in res.output
                assert "No module named 'zmd_ghost_flavor'" in res.output
                assert "PYTHONPATH" in res.output and "Traceback" not in res.output
            gone = r.invoke(zmd, ["models", "delete", "no-such-deployment", "-y"], env=env)
            assert gone.exit_code == 0 and "nothing to delete" in gone.output
        listed = r.invoke(zmd, ["models", "list", "-o", "json"], env={"ZMD_FAST_LIST": "0"})
        assert listed.exit_code == 0 and "cli-demo" in listed.output
    finally:
        Client().delete_service(row.id)

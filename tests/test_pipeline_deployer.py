"""The `zmd-local` Deployer flavor, used the ZenML way: `zmd flavors register`, `zenml deployer
register local-zmd --flavor=zmd-local`, a stack with `-D local-zmd`, `Pipeline.deploy(...)`,
`zenml deployment invoke|logs|refresh|delete`; a real local store and ZenML's real pipeline
server behind our front.

One deployment is shared by the module, in order: deploy, redeploy a changed version under a
looping client, kill -9 its server, a redeploy that fails on purpose, delete. Its auth key
(ZenML's `generate_auth_key`) is enforced by the front from the first deploy on.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

NAME = "zdemo"

PIPELINE = """
from zenml import pipeline, step

{hook}

@step
def answer(x: int) -> str:
    return "{version}:" + str(x)


@pipeline(settings={{"deployer": {{"generate_auth_key": True}}}}{on_init})
def demo(x: int = 1) -> str:
    return answer(x)
"""

BOOM = """
def boom() -> None:
    raise RuntimeError("planted init failure: the feature store is unreachable")
"""


def _write(root: Path, module: str, version: str, failing: bool = False) -> None:
    hook = BOOM if failing else ""
    on_init = ", on_init=boom" if failing else ""
    (root / f"{module}.py").write_text(
        PIPELINE.format(hook=hook, version=version, on_init=on_init), encoding="utf-8"
    )


def _cli(*args: str) -> str:
    """ZenML's CLI, in this process (its real click commands)."""
    from click.testing import CliRunner
    from zenml.cli.cli import cli as zenml_cli

    res = CliRunner().invoke(zenml_cli, list(args))
    assert res.exit_code == 0, f"zenml {' '.join(args)}:\n{res.output}\n{res.exception!r}"
    return res.output


def _deployment() -> Any:
    from zenml.client import Client

    return Client().get_deployment(NAME)


def _invoke(url: str, key: str | None, x: int = 3) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return requests.post(
        f"{url}/invoke", json={"parameters": {"x": x}}, headers=headers, timeout=60
    )


def _deploy(project: Path, module: str) -> Any:
    """`Pipeline.deploy` of `module`'s pipeline, from the project (ZenML's CLI, run in this
    process, makes its working directory the source root: the project's is set again)."""
    from zenml.utils import source_utils

    source_utils.set_custom_source_root(str(project))
    return importlib.import_module(module).demo.deploy(deployment_name=NAME, timeout=240)


def _output(r: requests.Response) -> str:
    assert r.status_code == 200, r.text
    return str(r.json()["outputs"]["output"])


@pytest.fixture(scope="module")
def project(zenml_env: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A project folder with three versions of one pipeline, the flavor registered, and a stack
    with the `zmd-local` deployer active while the module runs; the deployment is deleted and
    every process it recorded ended at the end."""
    from click.testing import CliRunner
    from zenml.utils import source_utils

    from zenml_model_deployers.cli import main as zmd
    from zenml_model_deployers.flavors import keep_active_stack

    root = tmp_path_factory.mktemp("pipeline-project")
    _write(root, "pl_v1", "v1")
    _write(root, "pl_v2", "v2")
    _write(root, "pl_bad", "bad", failing=True)
    old_root = source_utils.get_source_root()
    source_utils.set_custom_source_root(str(root))
    sys.path.insert(0, str(root))
    pids: list[int] = []
    try:
        with keep_active_stack():
            res = CliRunner().invoke(zmd, ["flavors", "register"])
            assert res.exit_code == 0, res.output
            # (already registered when another module of the session registered the flavors)
            assert "zmd-local: registered" in res.output.replace("already ", "")
            _cli("deployer", "register", "local-zmd", "--flavor=zmd-local")
            _cli(
                "stack", "register", "zmd-pipelines", "-o", "default", "-a", "default",
                "-D", "local-zmd", "--set",
            )  # fmt: skip
            yield root
            try:
                meta = _deployment().deployment_metadata or {}
                pids = [p for p in (meta.get("server_pid"), meta.get("front_pid")) if p]
                _cli("deployment", "delete", NAME, "-y", "--force")
            except KeyError:
                pass
    finally:
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()
        sys.path.remove(str(root))
        source_utils.set_custom_source_root(old_root)


@pytest.fixture(scope="module")
def deployed(project: Path) -> dict[str, Any]:
    """The first version, deployed with `Pipeline.deploy`; what it recorded."""
    resp = _deploy(project, "pl_v1")
    return {"url": resp.url, "key": resp.auth_key}


def test_deploy_serves_on_the_front_with_zenmls_auth_key(deployed: dict[str, Any]) -> None:
    from zenml.enums import DeploymentStatus

    dep = _deployment()
    assert dep.status == DeploymentStatus.RUNNING
    assert dep.url == deployed["url"] and deployed["key"]
    meta = dep.deployment_metadata
    assert meta["revision"] == 1 and meta["url"] == deployed["url"]
    assert _output(_invoke(deployed["url"], deployed["key"])) == "v1:3"
    # The front enforces the key; ZenML's health route stays open (ZenML probes it without).
    assert _invoke(deployed["url"], None).status_code == 401
    assert _invoke(deployed["url"], "wrong").status_code == 401
    assert requests.get(f"{deployed['url']}/health", timeout=10).status_code == 200
    # The key is in no process's argv (the front has it in its environment, once).
    for pid in (meta["server_pid"], meta["front_pid"]):
        assert deployed["key"] not in " ".join(psutil.Process(pid).cmdline())
    # ZenML's own invoke command reaches it through the URL.
    assert "v1:2" in _cli("deployment", "invoke", NAME, "--x=2")


def test_redeploy_under_load_fails_no_request(project: Path, deployed: dict[str, Any]) -> None:
    from zenml_model_deployers.testing.request_loop import RequestLoop

    old_server = _deployment().deployment_metadata["server_pid"]
    body = b'{"parameters": {"x": 7}}'
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {deployed['key']}"}
    with RequestLoop(f"{deployed['url']}/invoke", body, headers) as loop:
        resp = _deploy(project, "pl_v2")
        deadline = time.monotonic() + 30
        while (
            time.monotonic() < deadline
            and sum(a["outputs"]["output"] == "v2:7" for a in loop.answers) < 3
        ):
            time.sleep(0.1)
    outputs = [a["outputs"]["output"] for a in loop.answers]
    assert loop.failures == []
    assert resp.url == deployed["url"]
    assert "v1:7" in outputs and "v2:7" in outputs
    first_new = outputs.index("v2:7")
    assert set(outputs[first_new:]) == {"v2:7"}, "an old answer came after the first new one"
    meta = _deployment().deployment_metadata
    assert meta["revision"] == 2
    assert not psutil.pid_exists(old_server) or psutil.Process(old_server).status() == "zombie"


def test_a_killed_server_answers_again_by_itself(deployed: dict[str, Any]) -> None:
    from zenml.enums import DeploymentStatus

    meta = _deployment().deployment_metadata
    os.kill(meta["server_pid"], signal.SIGKILL)
    t0 = time.monotonic()
    answer = None
    while time.monotonic() - t0 < 120:
        try:
            r = _invoke(deployed["url"], deployed["key"], x=9)
            if r.status_code == 200:
                answer = _output(r)
                break
        except requests.RequestException:
            pass
        time.sleep(0.2)
    assert answer == "v2:9", f"no answer {time.monotonic() - t0:.0f} s after kill -9"
    # ZenML's refresh reads the runtime: running, one restart, the new server's pid.
    _cli("deployment", "refresh", NAME)
    dep = _deployment()
    assert dep.status == DeploymentStatus.RUNNING
    assert dep.deployment_metadata["restarts"] == 1
    assert dep.deployment_metadata["server_pid"] != meta["server_pid"]
    assert dep.url == deployed["url"]


def test_a_failed_redeploy_leaves_the_old_version_serving(
    project: Path, deployed: dict[str, Any]
) -> None:
    from zenml.deployers.exceptions import DeploymentProvisionError
    from zenml.enums import DeploymentStatus

    before = _deployment()
    with pytest.raises(DeploymentProvisionError) as err:
        _deploy(project, "pl_bad")
    assert "planted init failure" in str(err.value)  # the server's own words (its log tail)
    assert _output(_invoke(deployed["url"], deployed["key"], x=5)) == "v2:5"
    dep = _deployment()
    # The serving snapshot is the deployment's again (a restart serves it, not the failed one);
    # the error, with the log tail, is on the deployment.
    assert dep.snapshot.id == before.snapshot.id
    assert "planted init failure" in dep.deployment_metadata["last_error"]
    assert dep.deployment_metadata["server_pid"] == before.deployment_metadata["server_pid"]
    _cli("deployment", "refresh", NAME)
    assert _deployment().status == DeploymentStatus.RUNNING
    logs = _cli("deployment", "logs", NAME, "--tail", "50")
    assert "/invoke" in logs and deployed["key"] not in logs


def test_delete_leaves_no_process_and_no_url(deployed: dict[str, Any]) -> None:
    meta = _deployment().deployment_metadata
    workdir = Path(meta["log_file"]).parent
    pids = [meta["server_pid"], meta["front_pid"]]
    _cli("deployment", "delete", NAME, "-y")
    with pytest.raises(KeyError):
        _deployment()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{deployed['url']}/health", timeout=5)
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
    leftovers = [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if str(workdir) in " ".join(p.info["cmdline"] or [])
    ]
    assert leftovers == [] and not workdir.exists()


def test_zenmls_secrets_stay_out_of_the_restart_spec_and_argv(zenml_env: Path) -> None:
    """What ZenML hands a deployer as secrets (a ZenML server's API token) reaches the server's
    environment, but the restart spec only names it: its value goes to the front's memory."""
    import json
    from uuid import uuid4

    from zenml_model_deployers.local import process as proc
    from zenml_model_deployers.local.config import LocalDeploymentStatus
    from zenml_model_deployers.local.supervision import (
        RestartPolicy,
        split_secrets,
        supervision_spec,
    )
    from zenml_model_deployers.pipeline_deployer.service import (
        PipelineServerConfig,
        PipelineServerService,
    )

    token = "zenml-api-token-planted-123"
    svc = PipelineServerService(
        uuid=uuid4(),
        config=PipelineServerConfig(deployment_name="secret-check", deployment_id=str(uuid4())),
        status=LocalDeploymentStatus(),
    )
    svc.hand_over(
        {"ZENML_STORE_URL": "https://zenml.example"},
        {"ZENML_STORE_API_TOKEN": token},
        "planted-auth-key",
    )
    env = svc.server_env()
    assert env["ZENML_STORE_API_TOKEN"] == token and env["ZENML_STORE_URL"]
    argv = " ".join(svc.server_command(1234))
    assert token not in argv and "planted-auth-key" not in argv
    spec = supervision_spec(
        deployment_name=svc.deployment_name,
        config=svc.config,
        workdir=Path("."),
        server=proc.ProcessHandle(pid=os.getpid(), create_time=psutil.Process().create_time()),
        argv=svc.server_command(1234),
        env=svc.restart_env(env),
        started_env=env,
        port=1234,
        log=Path("server.log"),
        ready_timeout=10,
        policy=RestartPolicy(5, (0.5, 8.0), 30.0),
        api_key=svc.api_key_value(),
        extra_secrets=svc.secret_values(),
    )
    public, handed = split_secrets(spec)
    assert "ZENML_STORE_API_TOKEN" in public["secret_env"]
    assert token not in json.dumps(public)
    assert handed is not None and handed["env"]["ZENML_STORE_API_TOKEN"] == token
    assert public["env"]["ZENML_STORE_URL"] == "https://zenml.example"  # restarts keep ZenML's

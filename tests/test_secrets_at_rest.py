"""A secret given as a ZenML secret reference reaches the local server, survives its crashes,
a stop and a start, and a death of the front -- and is at rest nowhere but in ZenML's store:
no file under the ZenML config dir, the zmd home, the artifact store or /tmp, no argv (issue 28).
A real MLflow server on 127.0.0.1."""

from __future__ import annotations

import os
import secrets as std_secrets
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import requests
from click.testing import CliRunner
from zenml.client import Client

from zenml_model_deployers.cli import main as zmd
from zenml_model_deployers.flavors.mlflow.service import MLflowDeploymentConfig
from zenml_model_deployers.local.config import zmd_home

WITHIN = 90.0  # a restart on a loaded machine (see test_supervision.RESTART_WITHIN)
SCAN_FILES = 200_000  # the walk is bounded: files, bytes per file, seconds
SCAN_BYTES = 64 << 20
SCAN_SECONDS = 120.0


def _answers(url: str) -> bool:
    try:
        r = requests.post(url, json={"inputs": [[1.0, 2.0]]}, timeout=2)
    except requests.RequestException:
        return False
    return r.status_code == 200 and r.json() == {"predictions": [0]}


def _server_env(name: str, mlflow_deployer: Any) -> dict[str, str]:
    """The environment of the server that serves ``name`` now (as the supervisor adopted it)."""
    server = mlflow_deployer.find_deployment(name).status.server
    env: dict[str, str] = psutil.Process(server.pid).environ()
    return env


def _kill_server(name: str, mlflow_deployer: Any) -> int:
    server = psutil.Process(mlflow_deployer.find_deployment(name).status.server.pid)
    for p in [server, *server.children(recursive=True)]:
        p.kill()
    return server.pid


def _healed(name: str, mlflow_deployer: Any, url: str, old_pid: int) -> None:
    deadline = time.monotonic() + WITHIN
    while True:
        found = mlflow_deployer.find_deployment(name)
        server = found.status.server
        if server is not None and server.pid != old_pid and server.is_alive() and _answers(url):
            return
        assert time.monotonic() < deadline, f"not healed: {found.status.model_dump_json()}"
        time.sleep(0.2)


def _files(roots: list[Path]) -> Iterator[Path]:
    """Each file under the roots once (they nest: the test's ZenML config dir is in /tmp)."""
    seen: set[str] = set()
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root, onerror=lambda e: None):
            dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
            for f in filenames:
                path = os.path.join(dirpath, f)
                if path in seen:
                    continue
                seen.add(path)
                if len(seen) > SCAN_FILES:
                    return
                yield Path(path)


def _holding(value: bytes, roots: list[Path]) -> tuple[list[str], int]:
    """Readable regular files under ``roots`` whose bytes contain ``value`` (bounded walk)."""
    hits, scanned, deadline = [], 0, time.monotonic() + SCAN_SECONDS
    for path in _files(roots):
        if time.monotonic() > deadline:
            break
        try:
            if not path.is_file() or path.is_symlink():
                continue
            with open(path, "rb") as f:
                data = f.read(SCAN_BYTES)
        except OSError:
            continue
        scanned += 1
        if value in data:
            hits.append(str(path))
    return hits, scanned


def test_a_secret_is_at_rest_only_in_zenml(mlflow_deployer: Any, models_dir: Path) -> None:
    value = f"zmd-at-rest-{std_secrets.token_hex(16)}"
    Client().create_secret(name="zmd_at_rest", values={"token": value})
    name = "at-rest"
    cfg = MLflowDeploymentConfig(
        deployment_name=name,
        model_uri=str(models_dir / "a"),
        env={"X": "{{zmd_at_rest.token}}"},
    )
    svc = mlflow_deployer.deploy(cfg, timeout=120)
    url = svc.prediction_url
    try:
        assert _answers(url)
        assert _server_env(name, mlflow_deployer)["X"] == value  # the server sees the value

        # Self-heal: the front restarts the killed server with the secret it keeps in memory.
        _healed(name, mlflow_deployer, url, _kill_server(name, mlflow_deployer))
        assert _server_env(name, mlflow_deployer)["X"] == value

        # Stop and start: the same URL, the secret resolved again through ZenML.
        for cmd in ("stop", "start"):
            res = CliRunner().invoke(zmd, ["models", cmd, name])
            assert res.exit_code == 0, res.output
        found = mlflow_deployer.find_deployment(name)
        assert found.prediction_url == url and _answers(url)
        assert _server_env(name, mlflow_deployer)["X"] == value

        # The front itself killed: `zmd models start` starts a new one, which adopts the
        # running server and is handed its secret again, so it heals the server once more.
        os.kill(found.status.relay.pid, signal.SIGKILL)
        psutil.Process(found.status.relay.pid).wait(10)
        res = CliRunner().invoke(zmd, ["models", "start", name])
        assert res.exit_code == 0, res.output
        _healed(name, mlflow_deployer, url, _kill_server(name, mlflow_deployer))
        assert _server_env(name, mlflow_deployer)["X"] == value

        # Nowhere at rest but in ZenML's store (which keeps it encoded), and in no argv.
        roots = [
            Path(os.environ["ZENML_CONFIG_PATH"]),
            zmd_home(),
            Path(Client().active_stack.artifact_store.path),
            Path(tempfile.gettempdir()),
        ]
        hits, scanned = _holding(value.encode(), roots)
        assert scanned > 0 and (svc.workdir / "supervise.json").exists()
        assert hits == [], f"the secret is at rest in {hits}"
        for p in psutil.process_iter(["cmdline"]):
            assert value not in " ".join(p.info["cmdline"] or []), f"in the argv of {p.pid}"
    finally:
        found = mlflow_deployer.find_deployment(name)
        if found is not None:
            mlflow_deployer.delete(found)


def test_a_canary_after_the_front_restarted_still_has_the_servers_secrets(
    mlflow_deployer: Any, models_dir: Path
) -> None:
    """The front killed and started again (it knows the secrets only as `zmd models start`
    handed them over), then a canary: the relay steps into the data path with a new server of
    the stable revision, which it heals with the secret; the rollback steps it out again."""
    value = f"zmd-canary-secret-{std_secrets.token_hex(16)}"
    Client().create_secret(name="zmd_canary_secret", values={"token": value})
    name, env = "secret-canary", {"X": "{{zmd_canary_secret.token}}"}

    def cfg(variant: str) -> MLflowDeploymentConfig:
        return MLflowDeploymentConfig(
            deployment_name=name, model_uri=str(models_dir / variant), env=env
        )

    svc = mlflow_deployer.deploy(cfg("a"), timeout=120)
    url = svc.prediction_url
    try:
        os.kill(svc.status.relay.pid, signal.SIGKILL)
        psutil.Process(svc.status.relay.pid).wait(10)
        res = CliRunner().invoke(zmd, ["models", "start", name])
        assert res.exit_code == 0, res.output
        canary = mlflow_deployer.deploy(cfg("b"), timeout=120, canary_percent=50)
        assert not canary.status.direct and canary.status.canary_server is not None
        assert psutil.Process(canary.status.canary_server.pid).environ()["X"] == value
        assert _server_env(name, mlflow_deployer)["X"] == value
        _healed(name, mlflow_deployer, url, _kill_server(name, mlflow_deployer))
        assert _server_env(name, mlflow_deployer)["X"] == value
        back = mlflow_deployer.rollback(mlflow_deployer.find_deployment(name))
        assert back.status.direct and back.status.canary_server is None and _answers(url)
        assert _server_env(name, mlflow_deployer)["X"] == value
    finally:
        found = mlflow_deployer.find_deployment(name)
        if found is not None:
            mlflow_deployer.delete(found)
        Client().delete_secret("zmd_canary_secret")


def test_the_supervisor_restarts_with_secrets_it_holds_in_memory_only(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """No server: a shell stands in for one and writes its secret variable where the test
    reads it. A front handed the secret restarts with it; one started again without it waits
    (bounded), then marks the revision failed with the fix, and never starts it without."""
    import asyncio
    import json
    import subprocess

    from zenml_model_deployers.local import supervisor as sv
    from zenml_model_deployers.local.supervision import split_secrets

    monkeypatch.setattr(sv, "SECRETS_WAIT", 0.5)
    out = tmp_path / "seen"
    dead = subprocess.Popen(["true"])
    ident = {"pid": dead.pid, "create_time": psutil.Process(dead.pid).create_time()}
    dead.wait()
    value = f"zmd-mem-{std_secrets.token_hex(8)}"
    spec = {
        "deployment": "mem",
        "server": ident,
        "argv": ["sh", "-c", f'printf %s "$X" > {out}; exit 1'],
        "env": {"PATH": os.environ["PATH"], "X": value},
        "port": 1,
        "ready_timeout": 5,
        "redact": [value],
    }
    public, told = split_secrets(spec)
    assert told is not None and told["env"] == {"X": value}
    assert public["secret_env"] == ["X"] and value not in json.dumps(public)
    path = tmp_path / "supervise.json"
    sv.write_spec(path, public)

    async def restart_once(sup: sv.Supervisor) -> bool | None:
        sup._load_spec()
        return await sup._start_one()

    handed = sv.Supervisor(path)
    handed.remember(told)
    assert asyncio.run(restart_once(handed)) is False  # the stand-in exits: a failed restart
    assert out.read_text() == value  # ... but it had its secret

    out.unlink()
    again = sv.Supervisor(path)  # a front started again: nobody handed it the secret yet
    again._load_spec()
    again.watched = ident
    asyncio.run(again._heal())
    assert again.state == "failed" and "zmd models start mem" in again.message
    assert not out.exists()  # never started without its secret
    assert value not in path.with_name("supervisor.json").read_text()


def test_a_spec_an_older_version_wrote_is_scrubbed(tmp_path: Path) -> None:
    """Before this version the restart spec held the resolved values: the next `start` moves
    them into the running front's memory and rewrites the file without them."""
    from zenml_model_deployers.local.supervision import scrub_specs
    from zenml_model_deployers.local.supervisor import write_spec

    value = f"zmd-old-{std_secrets.token_hex(8)}"
    ident = {"pid": 1, "create_time": 1.0}
    old = {"server": ident, "env": {"PATH": "/bin", "X": value}, "redact": [value]}
    write_spec(tmp_path / "supervise.json", old)
    told: list[dict[str, Any]] = []
    scrub_specs(tmp_path, told.append)
    assert told == [{"cmd": "secrets", "server": ident, "env": {"X": value}, "redact": [value]}]
    assert value.encode() not in (tmp_path / "supervise.json").read_bytes()
    scrub_specs(tmp_path, told.append)  # nothing left to move
    assert len(told) == 1

"""Security of a real local deployment (`zmd-mlflow` on 127.0.0.1): the measurement of issue 16
(an impostor steering the relay) is refused, requests need the API key, files are private."""

from __future__ import annotations

import json
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from zenml_model_deployers.errors import ConfigurationError, SecretResolutionError
from zenml_model_deployers.flavors.mlflow.config import MLflowDeploymentConfig
from zenml_model_deployers.local.service import zmd_home
from zenml_model_deployers.materializer import render_card, service_to_json

KEY = "zmd-planted-api-key-6f1c2a9e"
REF = "{{zmd-sec-key.api_key}}"
INPUT = [[1.0, 2.0]]


@pytest.fixture(scope="module")
def keyed(mlflow_deployer: Any, models_dir: Path) -> Iterator[Any]:
    """A deployment of model `a` whose URL requires the API key."""
    from zenml.client import Client

    Client().create_secret(name="zmd-sec-key", values={"api_key": KEY})
    cfg = MLflowDeploymentConfig(
        deployment_name="keyed", model_uri=str(models_dir / "a"), api_key=REF
    )
    svc = mlflow_deployer.deploy(cfg, timeout=120)
    try:
        yield svc
    finally:
        mlflow_deployer.delete(svc)
        Client().delete_secret("zmd-sec-key")


def test_an_impostor_cannot_steer_the_relay_and_the_model_keeps_answering(keyed: Any) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    captured: list[bytes] = []

    class Impostor(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            captured.append(self.rfile.read(int(self.headers["Content-Length"])))
            body = b'{"predictions": [666]}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    impostor = ThreadingHTTPServer(("127.0.0.1", 0), Impostor)
    Thread(target=impostor.serve_forever, daemon=True).start()
    try:
        # The measurement of issue 16: a process with no credentials sends `switch`.
        with socket.create_connection(("127.0.0.1", keyed.status.control_port), timeout=5) as s:
            msg = {"cmd": "switch", "port": impostor.server_address[1]}
            s.sendall((json.dumps(msg) + "\n").encode())
            reply = json.loads(s.makefile().readline())
        assert reply["ok"] is False and reply["error"] == "unauthenticated"
        for _ in range(5):
            assert keyed.predict(INPUT) == [0]
        assert captured == []
        relay_log = (keyed.workdir / "relay.log").read_text()
        assert "refused an unauthenticated control command 'switch'" in relay_log
    finally:
        impostor.shutdown()
        impostor.server_close()


def test_requests_to_the_url_need_the_api_key(keyed: Any) -> None:
    url = keyed.prediction_url
    body = {"inputs": INPUT}
    assert requests.post(url, json=body, timeout=10).status_code == 401
    bad = requests.post(url, json=body, headers={"Authorization": "Bearer x"}, timeout=10)
    assert bad.status_code == 401
    good = requests.post(url, json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
    assert good.status_code == 200 and good.json()["predictions"] == [0]
    assert keyed.predict(INPUT) == [0]  # predict sends it
    curl = keyed.curl_example()
    assert "Authorization: Bearer $ZMD_API_KEY" in curl and KEY not in curl


def test_the_api_key_leaks_nowhere(keyed: Any, mlflow_deployer: Any) -> None:
    from zenml.client import Client

    places: dict[str, str] = {
        "artifact": json.dumps(service_to_json(keyed)),
        "card": render_card(keyed),
        "metadata": json.dumps(keyed.describe()),
        "store": Client().get_service(keyed.uuid).model_dump_json(),
    }
    for handle in (keyed.status.relay, keyed.status.server):
        places[f"argv {handle.pid}"] = " ".join(psutil.Process(handle.pid).cmdline())
    for log in keyed.workdir.glob("*.log"):
        places[log.name] = log.read_text(errors="replace")
    places["logs"] = "\n".join(keyed.get_logs())
    leaked = [where for where, text in places.items() if KEY in text]
    assert leaked == []
    assert REF in places["artifact"]  # the reference is what is recorded


def test_files_of_a_deployment_are_private(keyed: Any) -> None:
    home = zmd_home()
    checked = 0
    for root in (keyed.workdir, home / "locks"):
        for dirpath, dirnames, filenames in os.walk(root):
            for name in [*dirnames, *filenames]:
                st = os.lstat(os.path.join(dirpath, name))
                if stat.S_ISLNK(st.st_mode):
                    continue
                assert st.st_mode & 0o077 == 0, f"{dirpath}/{name}: {oct(st.st_mode)}"
                checked += 1
    for d in (home, home / "local", keyed.workdir, home / "locks"):
        assert d.stat().st_mode & 0o777 == 0o700, d
    names = {p.name for p in keyed.workdir.iterdir()}
    assert {"relay.log", "relay.json"} <= names and checked >= 4


def test_a_packaged_model_is_private(mlflow_deployer: Any) -> None:
    import numpy as np
    from sklearn.dummy import DummyClassifier

    clf = DummyClassifier(strategy="constant", constant=1).fit(np.zeros((2, 2)), [0, 1])
    path = Path(mlflow_deployer.package_model(clf, "private-pkg"))
    for dirpath, dirnames, filenames in os.walk(path.parent):
        for name in [*dirnames, *filenames]:
            mode = os.lstat(os.path.join(dirpath, name)).st_mode
            assert mode & 0o077 == 0, f"{dirpath}/{name}: {oct(mode)}"


def test_an_exposed_host_without_a_key_is_refused_unless_explicit(mlflow_deployer: Any) -> None:
    with pytest.raises(ConfigurationError) as err:
        mlflow_deployer.build_config(model_uri="/m", deployment_name="exposed", host="0.0.0.0")
    msg = str(err.value)
    assert "without an API key" in msg and "allow_unauthenticated=True" in msg
    assert "anyone who can reach" in msg
    ok = mlflow_deployer.build_config(
        model_uri="/m", deployment_name="exposed", host="0.0.0.0", allow_unauthenticated=True
    )
    same = mlflow_deployer.build_config(
        model_uri="/m", deployment_name="exposed", host="0.0.0.0", allow_unauthenticated=True
    )
    assert ok.config_hash() == same.config_hash()
    keyed = mlflow_deployer.build_config(
        model_uri="/m", deployment_name="exposed", host="0.0.0.0", api_key=REF
    )
    assert keyed.api_key == REF
    # A key given as a value (not a secret reference) is refused, and never echoed.
    with pytest.raises(ConfigurationError) as err:
        mlflow_deployer.build_config(model_uri="/m", deployment_name="x", api_key=KEY)
    assert KEY not in str(err.value) and "secret reference" in str(err.value)


def test_a_missing_key_secret_fails_before_anything_starts(
    mlflow_deployer: Any, models_dir: Path
) -> None:
    cfg = MLflowDeploymentConfig(
        deployment_name="no-key-secret",
        model_uri=str(models_dir / "a"),
        api_key="{{no-such-secret.api_key}}",
    )
    with pytest.raises(SecretResolutionError) as err:
        mlflow_deployer.deploy(cfg, timeout=60)
    assert "zenml secret create no-such-secret" in str(err.value)
    assert mlflow_deployer.find_deployment("no-key-secret") is None


def test_deployments_without_a_key_keep_their_revision_hash() -> None:
    # Deployments made before `api_key` existed must not roll out again after an upgrade.
    plain = MLflowDeploymentConfig(deployment_name="h", model_uri="/m")
    assert "api_key" not in plain.serving_fields()
    assert "allow_unauthenticated" not in plain.serving_fields()
    keyed = MLflowDeploymentConfig(deployment_name="h", model_uri="/m", api_key=REF)
    assert keyed.serving_fields()["api_key"] == REF
    assert keyed.config_hash() != plain.config_hash()


def test_an_update_that_adds_a_key_enforces_it_on_the_same_url(
    mlflow_deployer: Any, models_dir: Path
) -> None:
    from zenml.client import Client

    Client().create_secret(name="zmd-sec-key2", values={"api_key": KEY})
    plain = MLflowDeploymentConfig(deployment_name="add-key", model_uri=str(models_dir / "a"))
    svc = mlflow_deployer.deploy(plain, timeout=120)
    try:
        url = svc.prediction_url
        assert requests.post(url, json={"inputs": INPUT}, timeout=10).status_code == 200
        keyed = plain.model_copy(update={"api_key": "{{zmd-sec-key2.api_key}}"})
        svc = mlflow_deployer.deploy(keyed, timeout=120)
        assert svc.prediction_url == url and svc.status.revision == 2
        assert requests.post(url, json={"inputs": INPUT}, timeout=10).status_code == 401
        assert svc.predict(INPUT) == [0]
    finally:
        mlflow_deployer.delete(svc)
        Client().delete_secret("zmd-sec-key2")

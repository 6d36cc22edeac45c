"""kubectl itself against the simulated cluster, as a user inspects an offline run: discovery
of the core kinds and the CRDs (short names too), lists with their kinds, ``apply -f`` (which
reads the OpenAPI built from the CRDs and leaves validation to the server), ``get``,
``describe``, ``explain``, ``wait``, ``delete``, ``logs`` of the pod serving a model, and the
API server's own ``Status`` errors (NotFound, AlreadyExists, Invalid, strict decoding).

kubectl must be installed (Debian's ``kubectl``; ``.ci/run`` installs it): without it these
tests fail, saying so, rather than skip."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from kube_support import cluster, model_dirs  # noqa: F401

from zenml_model_deployers.testing.kube_cluster import SimulatedCluster

KUBECTL = shutil.which("kubectl")


@pytest.fixture(scope="module")
def kubectl(cluster: SimulatedCluster, tmp_path_factory: pytest.TempPathFactory) -> Any:  # noqa: F811
    """Runs kubectl on the module's cluster (its kubeconfig); returns (rc, stdout, stderr)."""
    if KUBECTL is None:
        pytest.fail(
            "kubectl is not installed: these tests inspect the simulated cluster with it. "
            "Install it (Debian/Ubuntu: `apt-get install -y kubectl`; .ci/run does it in CI)."
        )
    home = tmp_path_factory.mktemp("kubectl-home")
    env = {**os.environ, "KUBECONFIG": cluster.kubeconfig, "HOME": str(home)}

    def run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
        p = subprocess.run(
            [KUBECTL, *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        return p.returncode, p.stdout, p.stderr

    return run


def _manifest(name: str, storage: str, **spec: Any) -> str:
    return json.dumps(
        {
            "apiVersion": "mlops.seldon.io/v1alpha1",
            "kind": "Model",
            "metadata": {"name": name, "labels": {"team": "kubectl"}},
            "spec": {"storageUri": storage, "requirements": ["sklearn"], **spec},
        }
    )


def test_discovery_lists_core_kinds_and_crds(kubectl: Any, cluster: SimulatedCluster) -> None:  # noqa: F811
    """api-resources names the core kinds the flavors use and the CRDs, with short names;
    `get ns` answers; a list is a `<Kind>List` with its apiVersion."""
    rc, out, err = kubectl("api-resources")
    assert rc == 0, err
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    for plural in (
        "namespaces",
        "secrets",
        "serviceaccounts",
        "pods",
        "models",
        "inferenceservices",
    ):
        assert plural in rows, out
    assert "ns" in rows["namespaces"] and "isvc" in rows["inferenceservices"]
    rc, out, err = kubectl("get", "ns")
    assert rc == 0 and cluster.namespace in out, err
    for path, kind in (
        (f"/apis/mlops.seldon.io/v1alpha1/namespaces/{cluster.namespace}/models", "ModelList"),
        (f"/api/v1/namespaces/{cluster.namespace}/secrets", "SecretList"),
    ):
        rc, out, err = kubectl("get", "--raw", path)
        assert rc == 0, err
        listed = json.loads(out)
        assert listed["kind"] == kind and listed["apiVersion"].endswith(
            "v1alpha1" if "mlops" in path else "v1"
        )
    rc, out, err = kubectl("explain", "models.spec.storageUri")
    assert rc == 0 and "Storage URI" in out, err


def test_apply_get_describe_delete_and_the_servers_errors(
    kubectl: Any,
    cluster: SimulatedCluster,  # noqa: F811
    model_dirs: dict[str, str],  # noqa: F811
) -> None:
    """`apply -f` creates then configures (a new generation); get/describe show it; the server
    refuses an unknown field (strict decoding) and a wrong type (Invalid) in its own words, a
    create of a taken name (AlreadyExists) and a delete of a missing one (NotFound)."""
    name = "kubectl-apply"
    rc, out, err = kubectl("apply", "-f", "-", stdin=_manifest(name, model_dirs["a"]))
    assert rc == 0 and f"model.mlops.seldon.io/{name} created" in out, err
    rc, out, err = kubectl("apply", "-f", "-", stdin=_manifest(name, model_dirs["a"], replicas=2))
    assert rc == 0 and "configured" in out, err
    rc, out, err = kubectl(
        "get", "mlm", name, "-o", "jsonpath={.spec.replicas} {.metadata.generation}"
    )
    assert (rc, out) == (0, "2 2"), err
    rc, out, err = kubectl("get", "models", "-l", "team=kubectl")
    assert rc == 0 and out.splitlines()[0].split()[:2] == ["NAME", "READY"] and name in out, err
    rc, out, err = kubectl("describe", "model", name)
    assert rc == 0 and f"Name:         {name}" in out and "Storage Uri:" in out, err

    rc, _, err = kubectl("apply", "-f", "-", stdin=_manifest(name, model_dirs["a"], replica=2))
    assert rc == 1 and 'strict decoding error: unknown field "spec.replica"' in err, err
    rc, _, err = kubectl("apply", "-f", "-", stdin=_manifest(name, model_dirs["a"], replicas="2"))
    assert rc == 1, err
    assert (
        f'The Model "{name}" is invalid: spec.replicas: Invalid value: "string": '
        'spec.replicas in body must be of type integer: "string"'
    ) in err
    rc, _, err = kubectl("create", "-f", "-", stdin=_manifest(name, model_dirs["a"]))
    assert rc == 1 and f'models.mlops.seldon.io "{name}" already exists' in err, err
    assert "AlreadyExists" in err

    rc, out, err = kubectl("delete", "model", name, "--timeout=30s")
    assert rc == 0 and f'model.mlops.seldon.io "{name}" deleted' in out, err
    rc, _, err = kubectl("delete", "model", name)
    assert (
        rc == 1
        and f'Error from server (NotFound): models.mlops.seldon.io "{name}" not found' in err
    )
    rc, _, err = kubectl("get", "secret", "nobody")
    assert rc == 1 and 'secrets "nobody" not found' in err


def test_logs_of_the_pod_serving_a_model(
    kubectl: Any,
    cluster: SimulatedCluster,  # noqa: F811
    model_dirs: dict[str, str],  # noqa: F811
) -> None:
    """A Model applied with kubectl is loaded by the simulated Seldon; `kubectl wait` sees it
    ready, and `kubectl logs` on the server's pod shows MLServer loading it."""
    name = "kubectl-served"
    rc, out, err = kubectl("apply", "-f", "-", stdin=_manifest(name, model_dirs["b"]))
    assert rc == 0, err
    try:
        rc, out, err = kubectl(
            "wait", "--for=condition=ModelReady", f"model/{name}", "--timeout=60s"
        )
        assert rc == 0 and "condition met" in out, err
        rc, out, err = kubectl("get", "pods", "-l", "seldon-server-name=mlserver", "-o", "name")
        assert rc == 0 and out.split() == ["pod/mlserver-0"], err
        deadline = time.monotonic() + 10
        while True:
            rc, out, err = kubectl("logs", "mlserver-0", "--tail=200")
            if (rc == 0 and name in out) or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert rc == 0 and name in out, err or out[-500:]
    finally:
        kubectl("delete", "model", name, "--wait=false")


def test_a_secret_applied_and_deleted(
    kubectl: Any,
    cluster: SimulatedCluster,  # noqa: F811
    tmp_path: Path,
) -> None:  # noqa: F811
    """A core kind: `apply -f` of a Secret (stringData stored as base64 data), listed by label,
    deleted."""
    path = tmp_path / "secret.json"
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "kubectl-secret", "labels": {"team": "kubectl"}},
                "type": "Opaque",
                "stringData": {"key": "value"},
            }
        )
    )
    rc, out, err = kubectl("apply", "-f", str(path))
    assert rc == 0 and "secret/kubectl-secret created" in out, err
    rc, out, err = kubectl(
        "get", "secrets", "-l", "team=kubectl", "-o", "jsonpath={.items[*].data.key}"
    )
    assert (rc, out) == (0, "dmFsdWU="), err
    rc, out, err = kubectl("delete", "-f", str(path))
    assert rc == 0 and "deleted" in out, err
    assert [
        s for s in cluster.objects("secrets") if s["metadata"]["name"] == "kubectl-secret"
    ] == []

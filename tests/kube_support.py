"""Fixtures shared by the cluster flavors' tests: the simulated cluster (kmock API server,
Seldon-like controller, real MLServer) and sklearn models to serve.

Import them by name into a test module (``from kube_support import cluster, ...``). The
cluster is module-scoped: one MLServer start per module.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from zenml_model_deployers.config import DeploymentConfig
from zenml_model_deployers.kube.objects import ResourceKind
from zenml_model_deployers.service import DeploymentService
from zenml_model_deployers.testing.conformance import DeployerConformance
from zenml_model_deployers.testing.kube_cluster import SimulatedCluster


@pytest.fixture(scope="module")
def cluster(zenml_env: Path) -> Iterator[SimulatedCluster]:
    """A running simulated cluster with Seldon Core 1 and 2 installed."""
    with SimulatedCluster(load_delay=0.3, workdir=zenml_env / "kube") as c:
        yield c
        assert c.controller_errors() == []


@pytest.fixture(scope="module")
def api_only(zenml_env: Path) -> Iterator[SimulatedCluster]:
    """Only the API server, with no Seldon kinds installed (no model server)."""
    with SimulatedCluster(install=(), model_server=False, workdir=zenml_env / "kube") as c:
        yield c


def sklearn_model(constant: int) -> object:
    """A fitted classifier that predicts `constant` for every row (2 features).

    Args:
        constant: 0 or 1.

    Returns:
        The estimator.
    """
    import numpy as np
    from sklearn.dummy import DummyClassifier

    x = np.array([[0.0, 1.0], [1.0, 0.0]])
    return DummyClassifier(strategy="constant", constant=constant).fit(x, [0, 1])


def cluster_component(c: SimulatedCluster, **extra: Any) -> dict[str, Any]:
    """A cluster flavor's component settings pointing at a simulated cluster (its gateway)."""
    return {
        "kubeconfig": c.kubeconfig,
        "kubernetes_context": c.context,
        "kubernetes_namespace": c.namespace,
        "base_url": c.base_url,
        "default_timeout": 60,
        **extra,
    }


def _cluster_stack(cluster: SimulatedCluster, flavor: str) -> Iterator[str]:
    """A ZenML stack whose model deployer is ``flavor`` on the module's cluster, active for
    the module; the previously active stack comes back afterwards. Each module gets its own
    component and stack: ZenML keeps the active stack's components, and a component updated in
    place would keep pointing at the previous module's (closed) cluster."""
    from zenml.client import Client

    from zenml_model_deployers.flavors import ensure_deployer_stack

    client = Client()
    previous = client.active_stack_model.name
    name = f"zmd-test-{flavor.removeprefix('zmd-')}-{cluster.base_url.rsplit(':', 1)[-1]}"
    ensure_deployer_stack(name, name, flavor=flavor, configuration=cluster_component(cluster))
    yield name
    if client.active_stack_model.name != previous:
        client.activate_stack(previous)


@pytest.fixture(scope="module")
def seldon_stack(cluster: SimulatedCluster) -> Iterator[str]:
    """A ZenML stack whose model deployer is `zmd-seldon` on the module's cluster, active for
    the module (see `_cluster_stack`)."""
    yield from _cluster_stack(cluster, "zmd-seldon")


@pytest.fixture(scope="module")
def seldon_deployer(seldon_stack: str) -> Any:
    """The active stack's `zmd-seldon` deployer."""
    from zenml_model_deployers.flavors import get_deployer

    return get_deployer("zmd-seldon")


@pytest.fixture(scope="module")
def model_dirs(zenml_env: Path) -> dict[str, str]:
    """Storage folders: a and b (predict 0 and 1), picky (fails on negative inputs), broken (a
    model.joblib MLServer cannot load)."""
    import joblib

    out = {}
    root = zenml_env / "seldon-models"
    for variant, constant in (("a", 0), ("b", 1)):
        d = root / variant
        d.mkdir(parents=True, exist_ok=True)
        joblib.dump(sklearn_model(constant), d / "model.joblib")
        out[variant] = str(d)
    # Answers rows of non-negative numbers; raises on a negative one (sqrt -> NaN, which the
    # classifier refuses): a candidate that fails on part of its inputs, for real.
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    x = np.array([[0.0, 1.0], [1.0, 0.0]])
    picky = make_pipeline(FunctionTransformer(np.sqrt), LogisticRegression()).fit(x, [0, 1])
    d = root / "picky"
    d.mkdir(parents=True, exist_ok=True)
    joblib.dump(picky, d / "model.joblib")
    out["picky"] = str(d)
    broken = root / "broken"
    broken.mkdir(parents=True, exist_ok=True)
    (broken / "model.joblib").write_bytes(b"not a pickle: corrupt weights (planted)")
    out["broken"] = str(broken)
    return out


@pytest.fixture(scope="module")
def kserve_stack(cluster: SimulatedCluster) -> Iterator[str]:
    """A ZenML stack whose model deployer is `zmd-kserve` on the module's cluster, active for
    the module (see `_cluster_stack`)."""
    yield from _cluster_stack(cluster, "zmd-kserve")


@pytest.fixture(scope="module")
def kserve_deployer(kserve_stack: str) -> Any:
    """The active stack's `zmd-kserve` deployer."""
    from zenml_model_deployers.flavors import get_deployer

    return get_deployer("zmd-kserve")


class LoopingClient:
    """Loops on a deployment's URL from two threads (bounded: 60 s); half of the rows are
    negative (the picky model fails on them); records (time, status) of every answer."""

    def __init__(self, svc: Any) -> None:
        import threading

        self.url = svc.prediction_url
        self.requests = [svc.format_request([[1.0, 0.5]]), svc.format_request([[-1.0, 0.5]])]
        self.log: list[tuple[float, int]] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._loop) for _ in range(2)]
        for t in self.threads:
            t.start()

    def _loop(self) -> None:
        import time

        import requests

        s = requests.Session()
        deadline = time.monotonic() + 60
        i = 0
        while not self.stop.is_set() and time.monotonic() < deadline:
            headers, body = self.requests[i % 2]
            i += 1
            try:
                r = s.post(self.url, data=body, headers=headers, timeout=5)
                self.log.append((time.monotonic(), r.status_code))
            except requests.RequestException:
                self.log.append((time.monotonic(), 0))
            time.sleep(0.005)

    def finish(self) -> list[tuple[float, int]]:
        """Stops the loops.

        Returns:
            (monotonic time, HTTP status or 0 for a failed connection) per request.
        """
        self.stop.set()
        for t in self.threads:
            t.join(30)
        return self.log


def share_of_b(svc: Any, n: int) -> tuple[float, list[str]]:
    """Sends n single-row requests through the URL (4 at a time); the share answered by model
    b (which predicts 1), and the failed requests."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import requests

    headers, body = svc.format_request([[0.0, 1.0]])
    local = threading.local()

    def one(_: int) -> int | str:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        r = local.session.post(svc.prediction_url, data=body, headers=headers, timeout=30)
        if r.status_code != 200:
            return f"{r.status_code} {r.text[:100]}"
        return int(svc.parse_response(r.content) == [1])

    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(one, range(n)))
    failures = [a for a in answers if isinstance(a, str)]
    return sum(a for a in answers if isinstance(a, int)) / n, failures


def _ready(obj: dict[str, Any] | None) -> bool:
    """Whether a Seldon Model / KServe InferenceService (a Ready or ModelReady condition) or a
    Core 1 SeldonDeployment (state Available) serves."""
    status = (obj or {}).get("status") or {}
    if status.get("state") == "Available":
        return True
    return any(
        c.get("type") in ("Ready", "ModelReady") and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


class ClusterConformance(DeployerConformance):
    """What the conformance suite needs from a cluster flavor on the simulated cluster: the
    models ``a``/``b``/``broken`` of :func:`model_dirs`, the storage secret, and the API
    requests the flavor (not a controller) made. A subclass sets ``CONFIG_CLASS`` and the
    ``deployer``/``stack_with_deployer`` fixtures; the test module imports ``cluster`` and
    ``model_dirs``."""

    CONFIG_CLASS: ClassVar[type[DeploymentConfig]]
    # What a request to the deleted deployment's URL gets (the gateway or mesh stays).
    URL_GONE_STATUSES: ClassVar[tuple[int, ...]] = (404,)
    sample_input = [[0.0, 1.0]]
    timeout = 60.0
    overrides: ClassVar[dict[str, Any]] = {}
    sim: SimulatedCluster
    dirs: dict[str, str]

    @pytest.fixture(autouse=True)
    def _cluster(self, cluster: SimulatedCluster, model_dirs: dict[str, str]) -> None:
        type(self).sim = cluster
        type(self).dirs = model_dirs

    def make_config(self, variant: str, name: str, **overrides: Any) -> DeploymentConfig:
        return self.CONFIG_CLASS(
            deployment_name=name,
            model_name=name,
            model_uri=self.dirs[variant],
            **{**self.overrides, **overrides},
        )

    def expected(self, variant: str) -> Any:
        return [{"a": 0, "b": 1}[variant]]

    def secret_overrides(self, ref: str) -> dict[str, Any]:
        # storage_secret names the ZenML secret; all its keys go to the Kubernetes Secret.
        return {"storage_secret": ref.strip("{} ").split(".")[0]}

    def assert_url_gone(self, service: DeploymentService, url: str) -> None:
        import requests

        headers, body = service.format_request(self.sample_input)
        r = requests.post(url, data=body, headers=headers, timeout=5)
        assert r.status_code in self.URL_GONE_STATUSES, r.text

    # Every kind a cluster flavor may make for a deployment.
    OUR_PLURALS: ClassVar[tuple[str, ...]] = (
        "models",
        "experiments",
        "seldondeployments",
        "inferenceservices",
        "secrets",
        "serviceaccounts",
    )
    # A refusal makes nothing and waits for nothing: <= 2 s (0.1-0.3 s measured; 33 s when it
    # waited for the mesh to forget a name the foreign Model serves).
    refusal_within = 2.0
    planted: ClassVar[set[tuple[str, str]]] = set()

    def foreign_manifest(self, name: str) -> tuple[ResourceKind, dict[str, Any]]:
        """Someone else's resource of the flavor's kind named ``name``, serving model b."""
        raise NotImplementedError

    def occupy_name(self, name: str) -> tuple[dict[str, Any], Callable[[], None]] | None:
        """Someone else's resource of that name, created and serving (ready)."""
        from zenml_model_deployers.kube.client import KubeTarget
        from zenml_model_deployers.kube.resources import KubeNamespace

        kind, manifest = self.foreign_manifest(name)
        theirs = KubeNamespace(
            KubeTarget(kubeconfig=self.sim.kubeconfig, namespace=self.sim.namespace), "someone"
        )
        theirs.create(kind, manifest)
        type(self).planted = {*self.planted, (kind.plural, name)}
        deadline = time.monotonic() + 60
        while not _ready(self._obj(kind.plural, name)):
            assert time.monotonic() < deadline, f"their {kind.kind} did not become ready"
            time.sleep(0.1)

        def release() -> None:
            untouched = self._obj(kind.plural, name)
            theirs.delete(kind, name)
            assert untouched is not None and untouched["spec"] == manifest["spec"], (
                f"their {kind.kind} was changed"
            )

        return {}, release

    def _obj(self, plural: str, name: str) -> dict[str, Any] | None:
        found = [o for o in self.sim.objects(plural) if o["metadata"]["name"] == name]
        return found[0] if found else None

    def leftovers(self, deployer: Any, name: str) -> list[str]:
        """Every object in the namespace named after the deployment (the name or a name
        starting with ``<name>-``), of every kind a cluster flavor makes, but the planted one."""
        return [
            f"{plural}/{o['metadata']['name']}"
            for plural in self.OUR_PLURALS
            for o in self.sim.objects(plural)
            if (o["metadata"]["name"] == name or o["metadata"]["name"].startswith(f"{name}-"))
            and (plural, o["metadata"]["name"]) not in self.planted
        ]

    def backend_writes(self) -> int:
        # What the flavor (not the controller) asked the API server to change.
        return sum(
            1
            for r in self.sim.log.requests
            if not r["by_controller"] and r["verb"] not in ("get", "list", "watch")
        )

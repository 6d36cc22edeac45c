"""Fixtures shared by the cluster flavors' tests: the simulated cluster (kmock API server,
Seldon-like controller, real MLServer) and sklearn models to serve.

Import them by name into a test module (``from kube_support import cluster, ...``). The
cluster is module-scoped: one MLServer start per module.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from zenml_model_deployers.testing.kube_cluster import SimulatedCluster

# The CRDs as the projects publish them (the API server's schemas), beside the repository.
CRD_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "crds"


@pytest.fixture(scope="module")
def cluster(zenml_env: Path) -> Iterator[SimulatedCluster]:
    """A running simulated cluster with Seldon Core 1 and 2 installed."""
    with SimulatedCluster(CRD_DIR, load_delay=0.3, workdir=zenml_env / "kube") as c:
        yield c
        assert c.controller_errors() == []


@pytest.fixture(scope="module")
def api_only(zenml_env: Path) -> Iterator[SimulatedCluster]:
    """Only the API server, with no Seldon kinds installed (no model server)."""
    with SimulatedCluster(CRD_DIR, install=(), model_server=False, workdir=zenml_env / "kube") as c:
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

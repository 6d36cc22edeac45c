"""An offline Kubernetes cluster for the cluster flavors' tests: an API server, controllers
and real model servers.

- The API server is ``kmock``'s in-memory Kubernetes emulator (PyPI), reached by the real
  ``kubernetes`` client through a kubeconfig the cluster writes. On top of it this package adds
  what the flavors rely on and kmock lacks: every custom object sent is validated against the
  CRD's ``openAPIV3Schema`` (a field a real API server would reject fails with 422),
  ``metadata.generation`` / ``uid`` / ``resourceVersion`` as a real server keeps them,
  RBAC refusals (403, injectable per verb and resource), and pod logs.
- A Seldon-like controller (a thread) reconciles Seldon Core 2 ``Model`` objects like Seldon's scheduler:
  it loads each model's ``storageUri`` into a real MLServer (the server Seldon Core 2 runs)
  under a per-generation name, switches the route only once the new version is loaded (the old
  one serves until then), and reports ``ModelReady``/``Ready`` conditions with
  ``observedGeneration``, or ``ModelReady=False`` with MLServer's own error.
- An ingress on ``base_url`` routes ``/v2/models/{name}/...`` by the ``Seldon-Model`` header to
  the model's current version, like Seldon's mesh.
- A KServe-like controller reconciles ``InferenceService``s (Serverless revisions and traffic,
  Standard mode with ``spec.canary``, the stop annotation, KServe's failure conditions), and
  the ingress routes their hosts to MLServer or the vLLM stand-in, like KServe's gateway.

Use it to test your own pipelines offline::

    from zenml_model_deployers.testing.kube_cluster import SimulatedCluster

    with SimulatedCluster() as cluster:
        # cluster.kubeconfig, cluster.namespace, cluster.base_url: give them to the
        # zmd-seldon model deployer (kubeconfig, kubernetes_namespace, base_url).
        ...

The CRDs it validates against ship with the package (``testing/crds/``, with each file's
provenance and license); ``crd_dir=`` points it at your own cluster's CRDs instead.

MLServer runs from its own environment (it pins FastAPI/Starlette below ZenML's): ``make test``
builds it under ``.venv/mlserver``; elsewhere set ``ZMD_MLSERVER`` to an ``mlserver`` executable.

One module per part: ``crds`` (the kinds and their schemas), ``apiserver`` (kmock and our
additions), ``mlserver`` (the model server process), ``controller`` (what the controllers
share), ``seldon`` (Seldon's controller and mesh), ``kserve`` (KServe's controller),
``kserve_gateway`` (KServe's gateway and queue-proxy metrics), ``cluster`` (all of it together).
"""

from zenml_model_deployers.testing.kube_cluster.apiserver import (
    CONTROLLER_AGENT,
    SERVER_POD,
    ClusterLog,
)
from zenml_model_deployers.testing.kube_cluster.cluster import SimulatedCluster
from zenml_model_deployers.testing.kube_cluster.crds import (
    BUNDLED_CRD_DIR,
    KINDS,
    SELDON_V1,
    SELDON_V2,
    load_crd_schemas,
    validate_manifest,
)
from zenml_model_deployers.testing.kube_cluster.kserve import KServeController
from zenml_model_deployers.testing.kube_cluster.kserve_gateway import QueueProxyMetrics
from zenml_model_deployers.testing.kube_cluster.mlserver import (
    LoadedModel,
    find_mlserver,
    free_port,
)

__all__ = [
    "BUNDLED_CRD_DIR",
    "CONTROLLER_AGENT",
    "KINDS",
    "SELDON_V1",
    "SELDON_V2",
    "SERVER_POD",
    "ClusterLog",
    "KServeController",
    "LoadedModel",
    "QueueProxyMetrics",
    "SimulatedCluster",
    "find_mlserver",
    "free_port",
    "load_crd_schemas",
    "validate_manifest",
]

"""Train a classifier and serve it on KServe from a ZenML pipeline, roll a new model out in
place (same InferenceService, same URL), run a canary and promote it, stop and start it.

    python examples/kserve/run.py --offline
        against the simulated cluster of zenml_model_deployers.testing (an in-memory Kubernetes
        API, a KServe-like controller and a real MLServer): no cluster needed, in a throw-away
        ZenML config. Needs MLServer in its own environment (`make test` builds .venv/mlserver;
        or set ZMD_MLSERVER). The CRDs come with the package
        (--crds DIR: your cluster's own).

    python examples/kserve/run.py [--base-url http://<ingress address>] [--context C] [--namespace N]
        for real, in your ZenML config and kubeconfig. The models are uploaded to the active
        stack's artifact store: KServe's storage initializer must be able to read it (a bucket,
        with `--storage-secret <zenml secret>` for its credentials).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

from zenml import pipeline, step

from zenml_model_deployers.flavors import keep_active_stack

STACK = "zmd-kserve-example"
COMPONENT = "zmd-kserve"
DEPLOYMENT = "iris-kserve"


def say(message: str) -> None:
    """Prints a line of the example's story."""
    print(f"[kserve-example] {message}", flush=True)


@step
def train(c: float) -> Any:
    """Trains a logistic regression on iris (regularisation `c`)."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    return LogisticRegression(C=c, max_iter=500).fit(x, y)


@pipeline(enable_cache=False)
def train_and_deploy(c: float = 1.0, canary_percent: int | None = None) -> None:
    """Trains, then deploys to the stack's KServe model deployer (optionally as a canary)."""
    from zenml_model_deployers.steps import kserve_deployer_step

    kserve_deployer_step(
        model=train(c), deployment_name=DEPLOYMENT, timeout=120, canary_percent=canary_percent
    )


@contextlib.contextmanager
def offline_cluster(crds: str | None) -> Iterator[dict[str, Any]]:
    """The simulated cluster; yields the component settings that point at it."""
    from zenml_model_deployers.testing.kube_cluster import SimulatedCluster

    with SimulatedCluster(crd_dir=crds, namespace="models") as cluster:
        say(f"simulated cluster: API {cluster.api_url}, KServe gateway {cluster.base_url}")
        yield {
            "kubeconfig": cluster.kubeconfig,
            "kubernetes_context": cluster.context,
            "kubernetes_namespace": cluster.namespace,
            "base_url": cluster.base_url,
        }


# The user's active stack is active again when it ends (also on failure).
@keep_active_stack()
def run_example(settings: dict[str, Any], offline: bool) -> None:
    """Registers the stack, deploys, updates in place, stops/starts (offline: deletes)."""
    from zenml.client import Client

    from zenml_model_deployers.flavors import ensure_deployer_stack, get_deployer

    for line in ensure_deployer_stack(STACK, COMPONENT, "zmd-kserve", configuration=settings):
        say(f"registered {line}")
    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
    say("training and deploying (C=1.0) ...")
    run = train_and_deploy(c=1.0)
    step_run = Client().get_pipeline_run(run.id).steps["kserve_deployer_step"]
    url = step_run.run_metadata["deployed_model_url"]
    svc = step_run.outputs["kserve_deployment"][0].load()
    say(f"deployed_model_url: {url}")
    say(f"storageUri: {svc.config.model_uri}")
    say(f"predict -> {svc.predict(rows)}")
    say(f"curl: {svc.curl_example()}")

    say("retraining (C=0.01) and rolling it out in place (the old model serves meanwhile) ...")
    run = train_and_deploy(c=0.01)
    step_run = Client().get_pipeline_run(run.id).steps["kserve_deployer_step"]
    svc = step_run.outputs["kserve_deployment"][0].load()
    assert step_run.run_metadata["deployed_model_url"] == url, "the URL is stable"
    say(f"same URL, revision {svc.status.revision}: {svc.predict(rows)}")

    say("retraining (C=100) and running it as a 20 % canary beside the serving model ...")
    run = train_and_deploy(c=100.0, canary_percent=20)
    deployer = get_deployer("zmd-kserve")
    svc = deployer.find_deployment(DEPLOYMENT)
    say(f"canary: {svc.describe()['canary']['percent']} % of requests on the new model")
    svc = deployer.promote(svc)
    say(f"promoted: revision {svc.status.revision} serves all requests on {svc.prediction_url}")

    deployer.stop(svc)
    say(
        f"stopped (serving.kserve.io/stop): {deployer.find_deployment(DEPLOYMENT).status.state.value}"
    )
    deployer.start(svc)
    say(f"started again on {deployer.find_deployment(DEPLOYMENT).prediction_url}")
    if offline:
        deployer.delete(svc)
        say("deleted; the simulated cluster and the throw-away ZenML config go away now")
    else:
        say(f"remove it with `zmd models delete {DEPLOYMENT} -y`")


def main() -> None:
    """The example."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--offline", action="store_true", help="use the simulated cluster")
    parser.add_argument(
        "--crds", default=None, help="CRD folder (offline; default: the CRDs the package ships)"
    )
    parser.add_argument("--base-url", default="", help="ingress gateway address (real mode)")
    parser.add_argument("--context", default=None, help="kubeconfig context (real mode)")
    parser.add_argument("--namespace", default="default", help="namespace (real mode)")
    parser.add_argument("--storage-secret", default=None, help="ZenML secret for storage")
    args = parser.parse_args()
    os.environ.setdefault("ZENML_ANALYTICS_OPT_IN", "false")
    os.environ.setdefault("ZENML_LOGGING_VERBOSITY", "WARN")
    root = ""
    if args.offline:
        root = tempfile.mkdtemp(prefix="zmd-kserve-example-")
        os.environ["ZENML_CONFIG_PATH"] = os.path.join(root, "zenml")
        os.chdir(root)
        say(f"offline: throw-away ZenML config in {root}")
    try:
        if args.offline:
            with offline_cluster(args.crds) as settings:
                run_example(settings, offline=True)
        else:
            settings = {
                "kubernetes_context": args.context,
                "kubernetes_namespace": args.namespace,
                "base_url": args.base_url,
                "storage_secret": args.storage_secret,
            }
            run_example({k: v for k, v in settings.items() if v is not None}, offline=False)
    finally:
        if root:
            os.chdir(tempfile.gettempdir())
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

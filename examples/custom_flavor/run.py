"""Deploy a scikit-learn model with the one-file LitServe flavor from a ZenML pipeline, then
update it while a client sends requests: zero failed requests, same URL.

    cd examples/custom_flavor && python run.py [--keep]

It registers the flavor with ZenML's CLI (once), a `litserve` model deployer and a stack
`litserve-stack` using it, then runs the same pipeline twice with two different models. The
stack is active only while it runs: the stack that was active before comes back at the end,
also on failure, so ZenML and `zmd` commands elsewhere never have to import this folder's flavor.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

from zenml import pipeline, step
from zenml.client import Client
from zenml.enums import StackComponentType
from zenml_model_deployers.steps import model_deployer_step

from zenml_model_deployers.flavors import ensure_deployer_stack, keep_active_stack
from zenml_model_deployers.testing.request_loop import RequestLoop

HERE = Path(__file__).resolve().parent
DEPLOYMENT = "iris-litserve"


def register_flavor() -> None:
    """`zenml model-deployer flavor register` from this folder (ZenML's source root for it)."""
    try:
        Client().get_flavor_by_name_and_type("litserve", StackComponentType.MODEL_DEPLOYER)
    except KeyError:
        zenml = shutil.which("zenml") or str(Path(sys.executable).parent / "zenml")
        subprocess.run(
            [
                zenml,
                "model-deployer",
                "flavor",
                "register",
                "litserve_flavor.LitServeDeployerFlavor",
            ],
            cwd=HERE,
            check=True,
        )


@step
def train(max_depth: int) -> Annotated[Any, "model"]:
    """A decision tree on iris (shipped with scikit-learn: no download)."""
    from sklearn.datasets import load_iris
    from sklearn.tree import DecisionTreeClassifier

    x, y = load_iris(return_X_y=True)
    return DecisionTreeClassifier(max_depth=max_depth, random_state=0).fit(x, y)


@pipeline(enable_cache=False)
def train_and_deploy(max_depth: int) -> None:
    """Train, then deploy with whatever model deployer the active stack has."""
    model = train(max_depth)
    model_deployer_step(model=model, deployment_name=DEPLOYMENT, timeout=180)


def main() -> int:
    """Runs the example.

    Returns:
        The exit status: 0 when the update failed no request.
    """
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", action="store_true", help="leave the deployment running")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    register_flavor()
    # The stack that is active now is active again when the example ends (also on failure).
    with keep_active_stack():
        ensure_deployer_stack("litserve-stack", "litserve", "litserve")
        return deploy_twice(keep=args.keep)


def deploy_twice(keep: bool) -> int:
    """Deploys a first model, then a second one while a client loops on the URL.

    Args:
        keep: leave the deployment running.

    Returns:
        The exit status: 0 when the update failed no request.
    """
    train_and_deploy(max_depth=1)
    deployer = Client().active_stack.model_deployer
    first = deployer.find_deployment(DEPLOYMENT)
    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
    print(f"revision {first.status.revision} at {first.prediction_url}: {first.predict(rows)}")

    headers, body = first.format_request(rows)
    with RequestLoop(first.prediction_url, body, headers) as loop:
        train_and_deploy(max_depth=3)
    second = deployer.find_deployment(DEPLOYMENT)
    print(f"revision {second.status.revision} at {second.prediction_url}: {second.predict(rows)}")
    print(f"during the update: {loop.ok} requests answered, {len(loop.failures)} failed")
    for failure in loop.failures[:3]:
        print("  ", failure)
    if not keep:
        deployer.delete(second)
    ok = not loop.failures and second.prediction_url == first.prediction_url
    return 0 if ok and second.status.revision == first.status.revision + 1 else 1


if __name__ == "__main__":
    sys.exit(main())

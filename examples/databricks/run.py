"""Train a model, register it in Unity Catalog and serve it on Databricks Model Serving from a
ZenML pipeline; then run a new version as a 25% canary, promote it, stop and start.

    python examples/databricks/run.py --offline
        against the local serving-endpoints double and a local MLflow registry standing in for
        Unity Catalog: no network, no workspace, no cost, in a throw-away ZenML config

    python examples/databricks/run.py --host https://<workspace> --catalog main --schema default
        for real, in your ZenML config; needs a personal access token in a ZenML secret:
        `zenml secret create databricks -i` (key `token`). Serving endpoints cost money: delete
        it at the end with `zmd models delete iris-dbx -y`.
"""

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from typing import Annotated, Any

import pandas as pd
from zenml import pipeline, step

from zenml_model_deployers.flavors import keep_active_stack

STACK = "zmd-dbx-example"
COMPONENT = "zmd-dbx"
DEPLOYMENT = "iris-dbx"


def say(message: str) -> None:
    """Prints a line of the example's story."""
    print(f"[dbx-example] {message}", flush=True)


@contextlib.contextmanager
def offline_world(root: str) -> Iterator[dict[str, Any]]:
    """A planted token secret, a local registry standing in for Unity Catalog, the double."""
    from zenml.client import Client

    from zenml_model_deployers.testing.databricks_double import DatabricksDouble

    token = f"dapi-offline-{uuid.uuid4().hex}"
    Client().create_secret(name="databricks", values={"token": token})
    registry = f"file://{root}/uc-registry"
    with DatabricksDouble(registry_uri=registry, tokens={token}, update_delay=0.5) as double:
        say(f"Databricks double on {double.url}; Unity Catalog stand-in: {registry}")
        yield {"host": double.url, "registry_uri": registry, "tracking_uri": registry}


def train(kind: str) -> Any:
    """A small iris classifier (scikit-learn ships the data: nothing is downloaded)."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    x, y = load_iris(return_X_y=True, as_frame=True)
    model = (
        LogisticRegression(max_iter=500)
        if kind == "logreg"
        else DecisionTreeClassifier(max_depth=1)
    )
    # One row of each species: the two models disagree on the last one.
    return model.fit(x, y), x.iloc[[0, 50, 149]]


@step(enable_cache=False)
def trainer(kind: str) -> Annotated[Any, "model"]:
    """Trains the classifier of that kind."""
    return train(kind)[0]


@step
def example_rows() -> Annotated[pd.DataFrame, "input_example"]:
    """A few input rows (Unity Catalog needs the signature they give)."""
    return train("logreg")[1]


@pipeline(enable_cache=False)
def train_and_deploy_iris(kind: str, uc_name: str, canary_percent: int | None = None) -> None:
    """Train, register in Unity Catalog, serve (or canary) on Model Serving."""
    from zenml_model_deployers.steps import databricks_deployer_step

    model, example = trainer(kind), example_rows()
    databricks_deployer_step(
        model=model,
        registered_model_name=uc_name,
        input_example=example,
        deployment_name=DEPLOYMENT,
        workload_size="Small",
        scale_to_zero_enabled=True,
        tags={"project": "iris"},
        canary_percent=canary_percent,
    )


def deploy(kind: str, uc_name: str, canary_percent: int | None = None) -> Any:
    """Runs the pipeline once; returns the deploy step's run."""
    from zenml.client import Client

    run = train_and_deploy_iris(kind, uc_name, canary_percent)
    assert run is not None
    return Client().get_pipeline_run(run.id).steps["databricks_deployer_step"]


def main() -> None:
    """The example."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--offline", action="store_true", help="use the local double")
    parser.add_argument("--host", default="", help="workspace URL (real mode)")
    parser.add_argument("--catalog", default="main")
    parser.add_argument("--schema", default="default")
    args = parser.parse_args()
    os.environ.setdefault("ZENML_ANALYTICS_OPT_IN", "false")
    os.environ.setdefault("ZENML_LOGGING_VERBOSITY", "WARN")
    root = ""
    if args.offline:
        root = tempfile.mkdtemp(prefix="zmd-dbx-example-")
        os.environ["ZENML_CONFIG_PATH"] = os.path.join(root, "zenml")
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
        os.chdir(root)
        say(f"offline: throw-away ZenML config in {root}")
    elif not args.host:
        sys.exit("real mode needs --host (or use --offline)")
    try:
        run_example(args, root)
    finally:
        if root:
            os.chdir(tempfile.gettempdir())
            shutil.rmtree(root, ignore_errors=True)


# The user's active stack is active again when it ends (also on failure).
@keep_active_stack()
def run_example(args: argparse.Namespace, root: str) -> None:
    """Registers the stack, deploys, runs a canary, promotes, stops and starts."""
    from zenml_model_deployers.flavors import ensure_deployer_stack, get_deployer

    world = offline_world(root) if args.offline else contextlib.nullcontext({"host": args.host})
    uc_name = f"{args.catalog}.{args.schema}.iris"
    with world as settings:
        configuration = {"token": "{{databricks.token}}", "default_timeout": 1800, **settings}
        for line in ensure_deployer_stack(STACK, COMPONENT, "zmd-databricks", configuration):
            say(f"registered {line}")
        _, example = train("logreg")
        say(f"training a logistic regression, registering it as {uc_name}, deploying ...")
        step = deploy("logreg", uc_name)
        url = step.run_metadata["deployed_model_url"]
        svc = step.outputs["databricks_deployment"][0].load()
        say(f"deployed_model_url: {url}")
        say(f"serving {svc.config.model_uri}: predict(3 rows) -> {svc.predict(example)}")

        say("training a decision tree and running it as a 25% canary beside the first ...")
        step = deploy("tree", uc_name, canary_percent=25)
        svc = step.outputs["databricks_deployment"][0].load()
        assert step.run_metadata["deployed_model_url"] == url, "the URL is stable"
        canary = svc.canary_candidate()
        say(f"canary: {canary.model_uri if canary else None} at {svc.status.canary_percent}%")
        answers = [svc.predict(example.tail(1))[0] for _ in range(200)]
        tree_share = sum(1 for a in answers if a != 2) / len(answers)
        say(f"200 requests: {tree_share:.0%} answered by the canary (the tree says 1, not 2)")

        deployer = get_deployer("zmd-databricks")
        deployer.promote(svc)
        say(f"promoted: {svc.config.model_uri} serves all requests at the same URL")
        deployer.stop(svc)
        say(f"stopped (endpoint deleted): {deployer.find_deployment(DEPLOYMENT).status.state}")
        if args.offline:
            deployer.start(svc)
            again = deployer.find_deployment(DEPLOYMENT)
            say(f"started again on {again.prediction_url}: {again.predict(example)}")
            deployer.delete(again)
            say("deleted; the double and the throw-away ZenML config go away now")
        else:
            say(f"`zmd models start {DEPLOYMENT}` creates it again on the same URL")


if __name__ == "__main__":
    main()

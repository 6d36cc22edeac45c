"""Deploy a Hub model to Hugging Face Inference Endpoints from a ZenML pipeline, then roll a new
revision out in place, pause and resume it.

    python examples/huggingface/run.py --offline
        against the local Inference Endpoints double: no network, no token, no cost, in a
        throw-away ZenML config (HF_HUB_OFFLINE=1 is set to show that nothing leaves the machine)

    python examples/huggingface/run.py --namespace <user or org> --revision <sha> [--revision2 <sha>]
        for real, in your ZenML config; needs a token with write access to Inference Endpoints
        in a ZenML secret: `zenml secret create hf_token -i` (key `token`). Endpoints cost money:
        the script pauses the endpoint at the end; delete it with `zmd models delete sentiment -y`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any

from zenml_model_deployers.flavors import keep_active_stack

STACK = "zmd-hf-example"
COMPONENT = "zmd-hf"
DEPLOYMENT = "sentiment"
REPOSITORY = "distilbert/distilbert-base-uncased-finetuned-sst-2-english"


def say(message: str) -> None:
    """Prints a line of the example's story."""
    print(f"[hf-example] {message}", flush=True)


@contextlib.contextmanager
def offline_world() -> Iterator[None]:
    """A throw-away ZenML config, a planted token secret, and huggingface_hub on the double."""
    from zenml.client import Client

    from zenml_model_deployers.testing.hf_double import HFEndpointsDouble

    token = f"hf_offline_{uuid.uuid4().hex}"
    Client().create_secret(name="hf_token", values={"token": token})
    with HFEndpointsDouble(namespace="me", token=token) as double, double.patch_hub():
        say(f"Inference Endpoints double on {double.base_url} (namespace 'me')")
        yield


def deploy(revision: str) -> Any:
    """Runs the pipeline once; returns the deploy step's run."""
    from zenml import pipeline
    from zenml.client import Client
    from zenml_model_deployers.steps import huggingface_deployer_step

    @pipeline(enable_cache=False)
    def deploy_sentiment() -> None:
        huggingface_deployer_step(
            repository=REPOSITORY,
            revision=revision,
            task="text-classification",
            deployment_name=DEPLOYMENT,
            instance_type="intel-spr",
            instance_size="x2",
        )

    run = deploy_sentiment()
    assert run is not None
    return Client().get_pipeline_run(run.id).steps["huggingface_deployer_step"]


def main() -> None:
    """The example."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--offline", action="store_true", help="use the local double")
    parser.add_argument("--namespace", default="", help="user or organisation (real mode)")
    parser.add_argument("--revision", default="rev-1", help="first revision to deploy")
    parser.add_argument("--revision2", default="rev-2", help="the revision rolled out next")
    args = parser.parse_args()
    os.environ.setdefault("ZENML_ANALYTICS_OPT_IN", "false")
    os.environ.setdefault("ZENML_LOGGING_VERBOSITY", "WARN")
    root = ""
    if args.offline:
        root = tempfile.mkdtemp(prefix="zmd-hf-example-")
        os.environ["ZENML_CONFIG_PATH"] = os.path.join(root, "zenml")
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.chdir(root)
        say(f"offline: throw-away ZenML config in {root}")
    elif not args.namespace:
        sys.exit("real mode needs --namespace (or use --offline)")
    try:
        run_example(args)
    finally:
        if root:
            os.chdir(tempfile.gettempdir())
            shutil.rmtree(root, ignore_errors=True)


# The user's active stack is active again when it ends (also on failure).
@keep_active_stack()
def run_example(args: argparse.Namespace) -> None:
    """Registers the stack, deploys, updates in place, pauses (and, offline, cleans up)."""

    from zenml_model_deployers.flavors import ensure_deployer_stack, get_deployer

    world = offline_world() if args.offline else contextlib.nullcontext()
    with world:
        for line in ensure_deployer_stack(
            STACK,
            COMPONENT,
            "zmd-huggingface",
            configuration={"token": "{{hf_token.token}}", "namespace": args.namespace or "me"},
        ):
            say(f"registered {line}")
        say(f"deploying {REPOSITORY}@{args.revision} ...")
        step = deploy(args.revision)
        url = step.run_metadata["deployed_model_url"]
        svc = step.outputs["huggingface_deployment"][0].load()
        say(f"deployed_model_url: {url}")
        say(f"predict('I love this!') -> {svc.predict('I love this!')}")

        say(f"rolling {args.revision2} out in place (the old revision serves meanwhile) ...")
        step = deploy(args.revision2)
        svc = step.outputs["huggingface_deployment"][0].load()
        assert step.run_metadata["deployed_model_url"] == url, "the URL is stable"
        say(f"same URL, revision {svc.status.revision}: {svc.predict('I love this!')}")

        deployer = get_deployer("zmd-huggingface")
        deployer.stop(svc)
        say(
            f"stopped (paused on Hugging Face): {deployer.find_deployment(DEPLOYMENT).describe()['state']}"
        )
        if args.offline:
            deployer.start(svc)
            say(f"started again on {deployer.find_deployment(DEPLOYMENT).prediction_url}")
            deployer.delete(svc)
            say("deleted; the double and the throw-away ZenML config go away now")
        else:
            say(
                f"resume with `zmd models start {DEPLOYMENT}`; remove with `zmd models delete "
                f"{DEPLOYMENT} -y`"
            )


if __name__ == "__main__":
    main()

"""ZenML's pipeline server, pinned to one snapshot: ``python -m
zenml_model_deployers.pipeline_deployer.server --deployment_id D --snapshot_id S --host H
--port P``.

It does what ``python -m zenml.deployers.server.app --deployment_id D`` (the command ZenML's
``local`` deployer runs) does, with ZenML's own app runner, except that the snapshot it serves
is ``S``, not whichever snapshot the deployment's record names when the process starts. A
redeploy changes the record before the new server has started (ZenML updates it before it calls
the deployer), and back again if the new server fails: a crashed server that the supervisor
restarts in that window must serve its own revision's snapshot, not the other one.

With ``uvicorn_workers > 1`` or ``uvicorn_reload`` ZenML's runner starts uvicorn with a factory
that loads the deployment again by id (``ZENML_DEPLOYMENT_ID``): that path reads the record,
and the pin does not reach it.
"""

from __future__ import annotations

import argparse
from uuid import UUID


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The launcher's arguments.

    Args:
        argv: the arguments (None: the process's).

    Returns:
        The parsed arguments.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--deployment_id", required=True, type=UUID)
    parser.add_argument("--snapshot_id", required=True, type=UUID)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", required=True, type=int)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Loads the deployment with the pinned snapshot and runs ZenML's app runner for it.

    Args:
        argv: the arguments (None: the process's).
    """
    args = parse_args(argv)
    from zenml.client import Client
    from zenml.deployers.server.app import BaseDeploymentAppRunner
    from zenml.integrations.registry import integration_registry

    integration_registry.activate_integrations()  # as ZenML's own server module does
    store = Client().zen_store
    deployment = store.get_deployment(args.deployment_id)
    if deployment.snapshot_id != args.snapshot_id:
        deployment.get_resources().snapshot = store.get_snapshot(args.snapshot_id)
    runner = BaseDeploymentAppRunner.load_app_runner(deployment)
    runner.settings.uvicorn_host = args.host
    runner.settings.uvicorn_port = args.port
    runner.run()


if __name__ == "__main__":
    main()

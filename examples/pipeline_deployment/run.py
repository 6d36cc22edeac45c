"""Deploy a pipeline with `zmd-local`, update it under a looping client, and clean up.

Usage: python run.py [--keep]

1. registers the flavors (`zmd flavors register`), a deployer `local-zmd` of flavor
   `zmd-local` and a stack `zmd-pipelines` with it (`-D local-zmd`), as the docs show;
2. deploys `pipelines.greeter` as the deployment `greeter` (`zenml pipeline deploy`), and
   invokes it with its auth key;
3. changes the step's code (``greeting.py``) and deploys again while a client loops on `/invoke`: it prints the
   failed requests (0) and when the answer changed;
4. deletes the deployment (unless `--keep`) and activates the stack that was active before.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import requests
from zenml.client import Client

from zenml_model_deployers.flavors import keep_active_stack
from zenml_model_deployers.testing.request_loop import RequestLoop

HERE = Path(__file__).resolve().parent
NAME = "greeter"


def sh(*args: str) -> None:
    """Runs a command here, as a user types it."""
    print("$", " ".join(args), flush=True)
    subprocess.run(args, cwd=HERE, check=True)


def write_version(version: str) -> None:
    """The code change between two deploys."""
    (HERE / "greeting.py").write_text(
        f'"""What the greeting says (run.py rewrites it)."""\n\nVERSION = "{version}"\n',
        encoding="utf-8",
    )


def ensure_stack() -> None:
    """The flavor, the deployer and the stack (each only once)."""
    client = Client()
    sh("zmd", "flavors", "register")
    if not client.list_stack_components(type="deployer", name="local-zmd").items:
        sh("zenml", "deployer", "register", "local-zmd", "--flavor=zmd-local")
    if not client.list_stacks(name="zmd-pipelines").items:
        sh(
            "zenml",
            "stack",
            "register",
            "zmd-pipelines",
            "-o",
            "default",
            "-a",
            "default",
            "-D",
            "local-zmd",
        )
    client.activate_stack("zmd-pipelines")


def main() -> None:
    """See the module docstring."""
    with keep_active_stack():
        ensure_stack()
        write_version("v1")
        sh("zenml", "pipeline", "deploy", "pipelines.greeter", "-n", NAME, "-u")
        dep = Client().get_deployment(NAME)
        headers = {"Authorization": f"Bearer {dep.auth_key}"}
        invoke = f"{dep.url}/invoke"
        r = requests.post(invoke, json={"parameters": {"name": "zmd"}}, headers=headers, timeout=60)
        print("answer:", r.json()["outputs"])
        body = b'{"parameters": {"name": "loop"}}'
        write_version("v2")
        try:
            with RequestLoop(invoke, body, {**headers, "Content-Type": "application/json"}) as loop:
                sh("zenml", "pipeline", "deploy", "pipelines.greeter", "-n", NAME, "-u")
                time.sleep(2)  # a few answers of the new version
        finally:
            write_version("v1")
        outputs = [a["outputs"]["output"] for a in loop.answers]
        print(f"while updating: {loop.ok} answered, {len(loop.failures)} failed")
        print("answers in order:", " -> ".join(dict.fromkeys(outputs)))
        print("URL unchanged:", Client().get_deployment(NAME).url == dep.url)
        if "--keep" not in sys.argv:
            sh("zenml", "deployment", "delete", NAME, "-y")


if __name__ == "__main__":
    main()

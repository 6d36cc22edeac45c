"""`zenml …` (ZenML's real CLI, in this process) with the phases of a pipeline deploy timed, for
bench_pipeline_deploy.py: the same wrapping for both deployers, written as JSON to the file
named by ZMD_BENCH_PHASES (seconds since this process started).

Phases (None where a deployer has no such step):
- ``cli_ready``: process start -> ZenML's CLI imported;
- ``hook_start``: process start -> the deployer's ``do_provision_deployment`` called (ZenML's
  own work before it: loading the pipeline, building and storing the snapshot, the record);
- ``stop_old``: ZenML's ``local``: stopping the old server (``stop_process``);
- ``server_start``: the new server spawned -> its health route answered (zmd-local: the
  runtime's wait; ZenML's ``local``: a thread here polls the new server's health route every
  50 ms, as the runtime does, from the hook's return);
- ``retire``: zmd-local: switch, hand-over, drain and the old server's exit;
- ``hook``: the whole ``do_provision_deployment``;
- ``after_hook``: its return -> ``provision_deployment`` returned (ZenML's ``local``: its
  polling, every 5 s, until the deployment is RUNNING);
- ``returned``: process start -> the CLI command returned (the parent adds the exit).
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import psutil

T0 = psutil.Process().create_time()
PHASES: dict[str, float | None] = {}


def now() -> float:
    return time.time() - T0


def timed(owner: Any, name: str, phase: str, then: Callable[[Any], None] | None = None) -> None:
    """Wraps ``owner.name``: its duration becomes ``phase`` (summed over calls)."""
    f = getattr(owner, name)

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = now()
        PHASES.setdefault(f"{phase}@", start)
        try:
            result = f(*args, **kwargs)
        finally:
            PHASES[phase] = (PHASES.get(phase) or 0.0) + now() - start
        if then is not None:
            then(result)
        return result

    setattr(owner, name, wrapper)


def watch_health(state: Any) -> None:
    """ZenML's ``local``: polls the new server's health route from the hook's return."""
    url = getattr(state, "url", None)
    if not url:
        return
    spawned = now()

    def poll() -> None:
        import requests

        with requests.Session() as s:
            while now() - spawned < 600:
                try:
                    if s.get(f"{url}/health", timeout=2).status_code < 300:
                        PHASES["server_start"] = now() - spawned
                        return
                except requests.RequestException:
                    pass
                time.sleep(0.05)

    threading.Thread(target=poll, daemon=True).start()


def main() -> None:
    from zenml.cli.cli import cli

    PHASES["cli_ready"] = now()
    from zenml.deployers.base_deployer import BaseDeployer

    if os.environ.get("ZMD_BENCH_DEPLOYER") == "zmd-local":
        from zenml_model_deployers.local import revisions
        from zenml_model_deployers.local.revisions import Revisions
        from zenml_model_deployers.pipeline_deployer.deployer import ZmdLocalDeployer

        timed(revisions, "wait_until_ready", "server_start")
        timed(Revisions, "provision", "provision")
        timed(Revisions, "start_server", "start_server")
        timed(ZmdLocalDeployer, "do_provision_deployment", "hook")
    else:
        from zenml.deployers.local import local_deployer

        timed(local_deployer, "stop_process", "stop_old")
        timed(local_deployer.LocalDeployer, "do_provision_deployment", "hook", watch_health)
    timed(BaseDeployer, "provision_deployment", "provision_deployment")

    def write() -> None:
        out = os.environ.get("ZMD_BENCH_PHASES")
        if not out:
            return
        p = PHASES
        hook_at = p.get("hook@")
        hook = p.get("hook")
        phases = {
            "cli_ready": p.get("cli_ready"),
            "hook_start": hook_at,
            "stop_old": p.get("stop_old"),
            "server_start": p.get("server_start"),
            # zmd-local: the revision's provision besides the new server's start (switch,
            # hand-over, drain, the old server's exit; the front's and orphans' checks)
            "retire": (p["provision"] - p["start_server"])
            if "provision" in p and "start_server" in p
            else None,
            "hook": hook,
            "after_hook": p["provision_deployment@"] + p["provision_deployment"] - hook_at - hook
            if hook_at is not None and hook is not None and "provision_deployment" in p
            else None,
            "returned": p.get("returned"),
        }
        with open(out, "w", encoding="utf-8") as fh:
            json.dump(phases, fh)

    atexit.register(write)
    sys.argv[0] = "zenml"
    try:
        cli()
    finally:
        PHASES["returned"] = now()


if __name__ == "__main__":
    main()

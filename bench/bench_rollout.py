"""What a progressive rollout (policy "canary") adds beyond its bake intervals, against a plain
update of the same deployment in the same run, with a client looping on the URL throughout.

A zmd-mlflow deployment alternates between model `a` (predicts 0) and `b` (predicts 1):
``update`` (policy update) and ``rollout`` (policy canary, steps 10/50/100 %, 2 s bakes, gates
on), interleaved, ``ROUNDS`` times each. Measured: the deploy call's duration; for the rollout,
the time beyond its bakes (the candidate's start, splits, metric reads, promotion: the record's
``overhead_s``); failed requests of the looping client (must be 0).

Usage: ``.venv/bin/python bench/bench_rollout.py``.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as c  # noqa: E402
from bench_update import Looper  # noqa: E402

ROUNDS = 3
ROLLOUT = {"steps": [10, 50, 100], "interval": 2.0, "min_requests": 10, "max_p95_ratio": 3.0}


def run() -> dict[str, Any]:
    """Runs the benchmark in an isolated ZenML store; prints and returns the numbers."""
    root = c.isolated_env("rollout")  # before anything imports ZenML
    from zenml_model_deployers.flavors import get_deployer
    from zenml_model_deployers.flavors.mlflow.config import MLflowDeploymentConfig

    models = c.build_models(root / "models")
    c.zmd_stack()
    d = get_deployer("zmd-mlflow")
    name = "bench-rollout"
    svc = d.deploy(MLflowDeploymentConfig(deployment_name=name, model_uri=models["a"]))
    url = svc.prediction_url
    assert url
    looper = Looper(url)
    looper.start()
    times: dict[str, list[float]] = {"update": [], "rollout": []}
    overhead: list[float] = []
    current = "a"
    try:
        for _ in range(ROUNDS):
            for kind in ("update", "rollout"):
                current = "b" if current == "a" else "a"
                cfg = MLflowDeploymentConfig(deployment_name=name, model_uri=models[current])
                t0 = time.perf_counter()
                if kind == "update":
                    svc = d.deploy(cfg)
                else:
                    svc = d.deploy(cfg, policy="canary", rollout=ROLLOUT)
                    overhead.append(svc.last_rollout.overhead_s)
                times[kind].append(time.perf_counter() - t0)
    finally:
        looper.stop.set()
        looper.join(30)
        d.delete(d.find_deployment(name) or svc)
        c.end_our_processes(root)
        c.remove_root(root)
    failed = [r for r in looper.records if not r[1]]
    out = {
        "update_s": statistics.median(times["update"]),
        "rollout_s": statistics.median(times["rollout"]),
        "rollout_overhead_s": statistics.median(overhead),
        "requests": len(looper.records),
        "failed": len(failed),
    }
    bakes = len(ROLLOUT["steps"]) * ROLLOUT["interval"]  # type: ignore[arg-type]
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {ROUNDS} rounds each")
    print(f"update (policy update):       median {out['update_s']:.2f} s  {times['update']}")
    print(
        f"rollout (3 steps x 2 s bake): median {out['rollout_s']:.2f} s  {times['rollout']}; "
        f"beyond the {bakes:g} s of bakes: median {out['rollout_overhead_s']:.2f} s "
        f"({out['rollout_overhead_s'] / out['update_s']:.2f}x the update) {overhead}"
    )
    print(f"client on the URL: {out['requests']} requests, {out['failed']} failed")
    return out


if __name__ == "__main__":
    run()

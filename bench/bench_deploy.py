"""Deploy call -> first good prediction: raw `mlflow models serve` vs ours vs ZenML's built-in.

(a) raw: ``python -m mlflow models serve -m DIR --env-manager local -p PORT`` started by hand,
    then POST /invocations polled every 50 ms until it answers the expected prediction;
(b) ours: ``deployer.deploy(MLflowDeploymentConfig(...))`` (a new deployment each time, deleted
    afterwards), then one POST to the returned URL;
(c) built-in: ZenML 0.98's ``MLFlowModelDeployer.deploy_model(...)`` from a stack whose model
    deployer is flavor `mlflow` (with the `mlflow` experiment tracker its daemon requires), then
    POST polled until good. Deleted afterwards with ``delete_model_server``.

Median of 3 repeats each; the order of (a), (b), (c) rotates between repeats.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as c  # noqa: E402

REPEATS = 3
TIMEOUT = 120


def _raw(model: str, root: Path, i: int) -> float:
    port = c.free_port()
    t0 = time.perf_counter()
    proc = c.start_raw_server(model, port, root / f"raw-{i}.log")
    try:
        t1 = c.wait_prediction(
            f"http://127.0.0.1:{port}/invocations", [0], timeout=TIMEOUT, proc=proc
        )
    finally:
        c.terminate_tree(proc.pid)
    return t1 - t0


def _ours(deployer: Any, model: str, i: int) -> float:
    from zenml_model_deployers.flavors.mlflow.config import MLflowDeploymentConfig

    cfg = MLflowDeploymentConfig(deployment_name=f"bench-deploy-{i}", model_uri=model)
    svc = None
    t0 = time.perf_counter()
    try:
        svc = deployer.deploy(cfg, timeout=TIMEOUT)
        t1 = c.wait_prediction(svc.prediction_url, [0], timeout=TIMEOUT)
    finally:
        if svc is not None:
            deployer.delete(svc)
        else:  # a failed deploy leaves nothing behind by contract; double-check
            left = deployer.find_deployment(cfg.deployment_name)
            if left is not None:
                deployer.delete(left)
    return t1 - t0


def _builtin(model: str, i: int) -> float:
    from zenml.client import Client
    from zenml.integrations.mlflow.services.mlflow_deployment import (
        MLFlowDeploymentConfig,
        MLFlowDeploymentService,
    )

    bd = Client().active_stack.model_deployer
    cfg = MLFlowDeploymentConfig(
        model_name=f"bench-model-{i}",
        model_uri=model,
        pipeline_name="bench",
        pipeline_step_name=f"deploy-{i}",
        timeout=TIMEOUT,
    )
    svc = None
    t0 = time.perf_counter()
    try:
        svc = bd.deploy_model(
            config=cfg, service_type=MLFlowDeploymentService.SERVICE_TYPE, timeout=TIMEOUT
        )
        url = svc.prediction_url
        if not url:
            raise RuntimeError("built-in deploy_model returned a service without URL")
        t1 = c.wait_prediction(url, [0], timeout=TIMEOUT)
    finally:
        if svc is not None:
            pid = svc.status.pid
            bd.delete_model_server(svc.uuid, timeout=30)
            if pid:  # its daemon may still be exiting: wait (bounded), then make sure
                c.terminate_tree(pid, timeout=10)
    return t1 - t0


def run() -> dict[str, Any]:
    """Runs the benchmark (inside an isolated env) and returns its result."""
    root = c.isolated_env("deploy")
    models = c.build_models(root / "models")
    c.zmd_stack()  # registers a zmd-mlflow component (what `get_deployer` picks)
    c.builtin_stack()  # active: the built-in's daemon needs an MLflow experiment tracker
    from zenml_model_deployers.flavors import get_deployer

    deployer = get_deployer("zmd-mlflow")
    times: dict[str, list[float]] = {"raw": [], "ours": [], "builtin": []}
    errors: dict[str, str] = {}
    order = ["raw", "ours", "builtin"]
    for i in range(REPEATS):
        for kind in order[i % 3 :] + order[: i % 3]:
            if kind in errors:
                continue
            try:
                if kind == "raw":
                    dt = _raw(models["a"], root, i)
                elif kind == "ours":
                    dt = _ours(deployer, models["a"], i)
                else:
                    dt = _builtin(models["a"], i)
                times[kind].append(dt)
                print(f"  repeat {i + 1}: {kind:8s} {dt:6.2f} s", file=sys.stderr, flush=True)
            except Exception as e:  # report, do not invent a number
                errors[kind] = f"{type(e).__name__}: {e}"[:300]
                print(f"  {kind} failed: {errors[kind]}", file=sys.stderr, flush=True)

    med = {k: c.median(v) for k, v in times.items()}
    raw = med["raw"]
    r_ours = med["ours"] / raw if times["ours"] and times["raw"] else None
    r_builtin = med["builtin"] / raw if times["builtin"] and times["raw"] else None
    rows = []
    labels = {
        "raw": "(a) raw `mlflow models serve` (by hand)",
        "ours": "(b) ours: `deployer.deploy` (zmd-mlflow)",
        "builtin": "(c) ZenML built-in `MLFlowModelDeployer.deploy_model`",
    }
    for k in ("raw", "ours", "builtin"):
        ratio = 1.0 if k == "raw" and times["raw"] else (r_ours if k == "ours" else r_builtin)
        rows.append(
            [
                labels[k],
                ", ".join(f"{x:.2f}" for x in times[k]) or "-",
                c.fmt_s(med[k]) if times[k] else f"not measured ({errors.get(k, '')})",
                c.fmt_ratio(ratio),
            ]
        )
    for k in ("ours", "builtin"):
        print(
            f"ratio {k}/raw: {c.fmt_ratio(r_ours if k == 'ours' else r_builtin)}",
            file=sys.stderr,
        )
    return {
        "name": "deploy",
        "title": "Deploy: call -> first good prediction",
        "method": (
            f"Median of {REPEATS} repeats, order rotated each repeat. Model: sklearn "
            "DummyClassifier saved with `mlflow.sklearn.save_model`. Clock starts before the "
            "deploy call (or `Popen` for raw) and stops when POST /invocations returns the "
            "expected prediction (raw and built-in: polled every 50 ms). Teardown not timed."
        ),
        "tables": [
            {
                "caption": "Time to first good prediction",
                "headers": ["variant", "runs (s)", "median", "ratio to raw"],
                "rows": rows,
            }
        ],
        "goals": [
            {
                "goal": "ours <= 1.2x raw",
                "value": c.fmt_ratio(r_ours),
                "met": None if r_ours is None else r_ours <= 1.2,
            }
        ],
        "notes": [
            "The built-in waits in `BaseService.poll_service_status`, which sleeps 1 s between "
            "status checks, and starts its server through a daemonizing entrypoint that imports "
            "ZenML and activates every integration first.",
            *(f"{k} not measured: {v}" for k, v in errors.items()),
        ],
        "data": {"times": times, "median": med, "ratio_ours": r_ours, "ratio_builtin": r_builtin},
    }


if __name__ == "__main__":
    c.main_for("deploy", run)

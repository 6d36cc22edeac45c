"""Deploy -> first good prediction of the demo's model: `model=` (packaged) vs `model_uri=`.

The demo's model (examples/quickstart: a logistic regression on the iris DataFrame, a 3-row
input example), deployed with zmd-mlflow as a new deployment each time (deleted afterwards):

(a) `model_uri=`: the model was saved beforehand (untimed) by the packaging layer, exactly as
    `model=` saves it; the clock covers `build_config(model_uri=...)` + `deploy` + one POST;
(b) `model=`: the clock also covers packaging the object (the layer's library detection,
    digest and MLflow save); its stored directory is removed after each repeat (untimed), so
    every repeat packages afresh, as a first deploy of a new model does.

One untimed packaging first, so neither variant pays MLflow's scikit-learn flavor import (a
pipeline step pays it once per process). Median of 7 repeats each, alternating, same run.

Then each model of the test suite's zoo (tests/zoo_models.py: the models users train, fitted
once, untimed), deployed with `model=` as a new zmd-mlflow deployment: the time to package it
(`build_config`: library detection, digest, MLflow save; its stored directory removed after each
repeat, so every repeat packages afresh) and from `build_config` to the first answer equal to the
model's in-process predictions (the request docs/flavors/mlflow.md shows). The first packaging of
a library pays its MLflow flavor's import: an untimed packaging of each model comes first, as for
the demo's model.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "tests"))  # the zoo

import common as c  # noqa: E402

REPEATS = 7  # the demo's pair: single starts spread more than the 5% goal
ZOO_REPEATS = 3
TIMEOUT = 120


def _demo_model() -> tuple[Any, Any]:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    frame = load_iris(as_frame=True).frame
    frame = frame.rename(columns=lambda col: col.replace(" (cm)", "").replace(" ", "_"))
    x, y = frame.drop(columns="target"), frame["target"]
    return LogisticRegression(max_iter=500).fit(x, y), x.head(3)


def _body(example: Any) -> bytes:
    import json

    data = {"columns": list(example.columns), "data": example.to_numpy().tolist()}
    return json.dumps({"dataframe_split": data}).encode()


def _deploy(deployer: Any, name: str, body: bytes, expected: list[int], **source: Any) -> float:
    svc = None
    t0 = time.perf_counter()
    try:
        cfg = deployer.build_config(deployment_name=name, **source)
        svc = deployer.deploy(cfg, timeout=TIMEOUT)
        t1 = c.wait_prediction(svc.prediction_url, expected, timeout=TIMEOUT, body=body)
    finally:
        found = svc or deployer.find_deployment(name)
        if found is not None:
            deployer.delete(found)
    return t1 - t0


def _zoo_times(deployer: Any) -> dict[str, dict[str, list[float]]]:
    """Package and deploy -> first good answer of each zoo model, ZOO_REPEATS times each."""
    import requests
    from zoo_models import AVAILABLE, assert_matches, trained
    from zoo_pipeline import mlflow_body

    from zenml_model_deployers.local.service import zmd_home

    out: dict[str, dict[str, list[float]]] = {}
    for n, kind in enumerate(AVAILABLE):
        zoo = trained(kind)
        # Short names: the local runtime's Unix sockets live under the deployment's folder.
        warm = f"bz{n}-warm"
        deployer.build_config(model=zoo.model, deployment_name=warm, input_example=zoo.example)
        out[kind] = {"package": [], "first_prediction": []}
        for i in range(ZOO_REPEATS):
            name = f"bz{n}-{i}"
            svc = None
            t0 = time.perf_counter()
            try:
                cfg = deployer.build_config(
                    model=zoo.model, deployment_name=name, input_example=zoo.example
                )
                t1 = time.perf_counter()
                svc = deployer.deploy(cfg, timeout=TIMEOUT)
                r = requests.post(svc.prediction_url, json=mlflow_body(zoo.rows), timeout=60)
                t2 = time.perf_counter()
                assert r.status_code == 200, r.text
                assert_matches(r.json()["predictions"], zoo)
            finally:
                found = svc or deployer.find_deployment(name)
                if found is not None:
                    deployer.delete(found)
                for stored in (zmd_home() / "models").glob(f"{name}-*"):
                    shutil.rmtree(stored)
            out[kind]["package"].append(t1 - t0)
            out[kind]["first_prediction"].append(t2 - t0)
            print(f"  {kind} {i + 1}: {t1 - t0:.2f} s, {t2 - t0:.2f} s", file=sys.stderr)
    return out


def run() -> dict[str, Any]:
    """Runs the benchmark (inside an isolated env) and returns its result."""
    root = c.isolated_env("model_object")
    c.zmd_stack()
    from zenml_model_deployers.flavors import get_deployer
    from zenml_model_deployers.flavors.mlflow.packaging import save_mlflow_model
    from zenml_model_deployers.local.service import zmd_home

    deployer = get_deployer("zmd-mlflow")
    model, example = _demo_model()
    expected = [int(v) for v in model.predict(example)]
    body = _body(example)
    saved = root / "uri-model"
    shutil.copytree(save_mlflow_model(model, "bench-warmup", example), saved)  # untimed

    times: dict[str, list[float]] = {"uri": [], "object": []}
    for i in range(REPEATS):
        for kind in ("uri", "object") if i % 2 == 0 else ("object", "uri"):
            name = f"bench-{kind}-{i}"
            if kind == "uri":
                dt = _deploy(deployer, name, body, expected, model_uri=str(saved))
            else:
                dt = _deploy(deployer, name, body, expected, model=model, input_example=example)
                for stored in (zmd_home() / "models").glob(f"{name}-*"):
                    shutil.rmtree(stored)
            times[kind].append(dt)
            print(f"  repeat {i + 1}: {kind:6s} {dt:6.2f} s", file=sys.stderr, flush=True)

    zoo = _zoo_times(deployer)
    med = {k: c.median(v) for k, v in times.items()}
    ratio = med["object"] / med["uri"]
    labels = {
        "uri": "(a) `model_uri=` (saved beforehand, untimed)",
        "object": "(b) `model=` (packaged in the timed call)",
    }
    rows = [
        [
            labels[k],
            ", ".join(f"{x:.2f}" for x in times[k]),
            c.fmt_s(med[k]),
            c.fmt_ratio(1.0 if k == "uri" else ratio),
        ]
        for k in ("uri", "object")
    ]
    print(f"ratio model=/model_uri=: {c.fmt_ratio(ratio)}", file=sys.stderr)
    return {
        "name": "model_object",
        "title": "Deploy a model object: `model=` vs `model_uri=` (issue 25)",
        "method": (
            f"Median of {REPEATS} repeats each, alternating. The demo's model (iris logistic "
            "regression, 3-row DataFrame input example), a new zmd-mlflow deployment each time. "
            "Clock from the config's build to the first good POST /invocations "
            "(`dataframe_split`). Teardown untimed; the `model=` variant's stored directory is "
            "removed after each repeat, so each repeat packages afresh. One untimed packaging "
            "first (MLflow's scikit-learn flavor import, paid once per process). Then each model "
            "of the test suite's zoo (`tests/zoo_models.py`, fitted once, untimed; one untimed "
            f"packaging of each first), {ZOO_REPEATS} new zmd-mlflow deployments each with "
            "`model=`: the packaging alone (`build_config`: library detection, digest, MLflow "
            "save; the stored directory removed after each repeat), and from `build_config` to "
            "the first answer equal to the model's in-process predictions (the request "
            "docs/flavors/mlflow.md shows)."
        ),
        "tables": [
            {
                "caption": "Deploy -> first good prediction",
                "headers": ["variant", "runs (s)", "median", "ratio to model_uri="],
                "rows": rows,
            },
            {
                "caption": "Each zoo model with `model=` (zmd-mlflow, a new deployment)",
                "headers": [
                    "model",
                    "package (median)",
                    "build_config -> first answer (runs, median)",
                ],
                "rows": [
                    [
                        kind,
                        c.fmt_s(c.median(t["package"])),
                        ", ".join(f"{x:.2f}" for x in t["first_prediction"])
                        + f" ({c.fmt_s(c.median(t['first_prediction']))})",
                    ]
                    for kind, t in zoo.items()
                ],
            },
        ],
        "goals": [
            {
                "goal": "`model=` <= 1.05x `model_uri=`",
                "value": c.fmt_ratio(ratio),
                "met": ratio <= 1.05,
            }
        ],
        "notes": [
            "Packaging is the packaging layer's MLflow target (cloudpickle, the flavor's pinned "
            "requirements, no requirement inference in a subprocess)."
        ],
        "data": {"times": times, "median": med, "ratio": ratio, "zoo": zoo},
    }


if __name__ == "__main__":
    c.main_for("model_object", run)

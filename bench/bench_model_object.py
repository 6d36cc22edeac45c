"""Deploy -> first good prediction of the demo's model: `model=` (packaged) vs `model_uri=`.

The demo's model (examples/quickstart: a logistic regression on the iris DataFrame, a 3-row
input example), deployed with zmd-mlflow as a new deployment each time (deleted afterwards):

(a) `model_uri=`: the model was saved beforehand (untimed) by the packaging layer, exactly as
    `model=` saves it; the clock covers `build_config(model_uri=...)` + `deploy` + one POST;
(b) `model=`: the clock also covers packaging the object (the layer's library detection,
    digest and MLflow save); its stored directory is removed after each repeat (untimed), so
    every repeat packages afresh, as a first deploy of a new model does.

One untimed packaging first, so neither variant pays MLflow's scikit-learn flavor import (a
pipeline step pays it once per process). Median of 3 repeats each, alternating, same run.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as c  # noqa: E402

REPEATS = 3
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
            "removed after each repeat, so each repeat packages afresh."
        ),
        "tables": [
            {
                "caption": "Deploy -> first good prediction",
                "headers": ["variant", "runs (s)", "median", "ratio to model_uri="],
                "rows": rows,
            }
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
        "data": {"times": times, "median": med, "ratio": ratio},
    }


if __name__ == "__main__":
    c.main_for("model_object", run)

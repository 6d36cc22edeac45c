"""The zoo through a flavor's deploy step in ONE ZenML pipeline run: each model is deployed with
the step's `model=` as an update of one deployment, and asked over HTTP in the request format
the flavor's docs show (by a step) before the next model replaces it.

Asking inside the run is what lets one deployment (one server start per model, as an update
costs) serve the whole zoo: once the next model rolls out, the previous one is gone.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any

import numpy as np
import pandas as pd
import requests
from zenml import pipeline, step
from zoo_models import ZOO, ZooModel

from zenml_model_deployers.service import DeploymentService

#: flavor -> (rows -> request body, headers); set by each test module (headers may carry a
#: credential, which must never be a step parameter: parameters are stored with the run).
ASKERS: dict[str, Callable[[Any], tuple[dict[str, Any], dict[str, str]]]] = {}


def records_body(rows: Any) -> dict[str, Any]:
    """zmd-bentoml's generated service: `input_data` as records for a DataFrame, else one
    list per row; a missing value is JSON's null."""
    if isinstance(rows, pd.DataFrame):
        data = rows.astype(object).where(rows.notna(), None)
        return {"input_data": data.to_dict(orient="records")}
    arr = np.asarray(rows, dtype=object)
    return {"input_data": np.where(pd.isna(arr), None, arr).tolist()}


def mlflow_body(rows: Any) -> dict[str, Any]:
    """MLflow's scoring format (zmd-mlflow, Databricks): `dataframe_split` for a DataFrame,
    `inputs` for an array; a missing value is JSON's null."""
    if isinstance(rows, pd.DataFrame):
        data = rows.astype(object).where(rows.notna(), None).to_numpy().tolist()
        return {"dataframe_split": {"columns": list(rows.columns), "data": data}}
    arr = np.asarray(rows, dtype=object)
    return {"inputs": np.where(pd.isna(arr), None, arr).tolist()}


@step(enable_cache=False)
def ask_over_http(service: DeploymentService, kind: str, flavor: str) -> Annotated[str, "answer"]:
    """Posts the zoo's rows to the deployment's URL as the flavor's docs show; returns
    `{"status": ..., "body": ...}` as JSON text."""
    body, headers = ASKERS[flavor](ZOO[kind]().rows)
    r = requests.post(service.prediction_url, json=body, headers=headers, timeout=60)
    try:
        answer: Any = r.json()
    except ValueError:
        answer = r.text
    return json.dumps({"status": r.status_code, "body": answer})


def zoo_pipeline(deploy: Callable[..., Any], kinds: list[str], flavor: str) -> Any:
    """A pipeline that deploys `kinds` in turn with `deploy(model=, input_example=)` (a deploy
    step with its other parameters bound), asking each before the next one rolls out.

    The models, fitted here, enter the run as artifacts (ZenML's `ExternalArtifact`): a
    training step per model would add its own step run, seconds each on a loaded machine,
    and test nothing of ours. A model without an input example (the README's forest) gets a
    few of its rows: the flavors' requests name the columns or dtype the example gives.
    """
    from zenml import ExternalArtifact

    zoos = {kind: ZOO[kind]() for kind in kinds}

    @pipeline(enable_cache=False, name=f"zoo-{flavor.removeprefix('zmd-')}")
    def zoo() -> None:
        after: list[str] = []
        for kind, z in zoos.items():
            example = z.example if z.example is not None else z.rows[:5]
            service = deploy(
                model=ExternalArtifact(value=z.model),
                input_example=ExternalArtifact(value=example),
                id=f"deploy_{kind}",
                after=after,
            )
            ask_over_http(service, kind, flavor, id=f"ask_{kind}")
            after = [f"ask_{kind}"]

    return zoo


def answers_of(run: Any, kind: str) -> tuple[int, Any]:
    """The status and body the model of `kind` answered in `run`."""
    got = json.loads(run.steps[f"ask_{kind}"].outputs["answer"][0].load())
    return int(got["status"]), got["body"]


def assert_same_as_in_process(answer: Any, zoo: ZooModel) -> None:
    """The served answers equal the model's in-process predictions on the same rows: exact
    for classes, within 1e-6 for numbers."""
    got = np.asarray(answer)
    want = np.asarray(zoo.expected)
    assert got.size == want.size, (zoo.name, got, want)
    got = got.reshape(want.shape)
    if zoo.classes:
        assert got.tolist() == want.tolist(), zoo.name
    else:
        np.testing.assert_allclose(
            got.astype(float), want.astype(float), rtol=0, atol=1e-6, err_msg=zoo.name
        )


def step_seconds(run: Any, name: str) -> float:
    """How long a step of the run took."""
    s = run.steps[name]
    return float((s.end_time - s.start_time).total_seconds())

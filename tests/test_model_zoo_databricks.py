"""The model zoo through zmd-databricks (issue 25): every zoo model trained in a pipeline step,
registered in the stand-in Unity Catalog by `databricks_deployer_step(model=...,
input_example=...)` (the packaging layer writes it as its library's MLflow model), served by the
serving-endpoints double (which loads it with `mlflow.pyfunc`, as Model Serving does), and
answered over HTTP as docs/flavors/databricks.md shows, equal to the model's own predictions.

One pipeline run, one endpoint: each model is an in-place update of the previous one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from dbx_support import (  # noqa: F401
    dbx_component,
    dbx_deployer,
    dbx_double,
    dbx_registry,
    dbx_stack,
    planted_credentials,
)
from zoo_models import AVAILABLE, ZOO, missing
from zoo_pipeline import (
    ASKERS,
    answers_of,
    assert_same_as_in_process,
    mlflow_body,
    step_seconds,
    zoo_pipeline,
)

from zenml_model_deployers.errors import ConfigurationError

NAME = "zoo-dbx"
UC_NAME = "main.zmd.zoo"
KINDS = AVAILABLE  # the pytorch cell skips without torch (zoo_models.missing)


def databricks_body(rows: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """The docs' forms: `dataframe_split` for a DataFrame, `instances` for an array, with the
    workspace token as a bearer (read here, never a step parameter)."""
    if isinstance(rows, pd.DataFrame):
        body = mlflow_body(rows)
    else:
        body = {"instances": mlflow_body(np.asarray(rows))["inputs"]}
    return body, {"Authorization": f"Bearer {planted_credentials()['token']}"}


ASKERS["zmd-databricks"] = databricks_body


@pytest.fixture(scope="module")
def zoo_run(dbx_deployer: Any) -> Iterator[Any]:  # noqa: F811
    """The zoo's pipeline run on the zmd-databricks stack; the endpoint is deleted afterwards."""
    from zenml.client import Client
    from zenml_model_deployers.steps import databricks_deployer_step

    deploy = databricks_deployer_step.with_options(
        parameters={"deployment_name": NAME, "registered_model_name": UC_NAME, "timeout": 60}
    )
    t0 = time.perf_counter()
    try:
        run = zoo_pipeline(deploy, KINDS, "zmd-databricks").with_options(run_name="zoo-dbx")()
        run = Client().get_pipeline_run(run.id)
        timings = {k: {"deploy_step": round(step_seconds(run, f"deploy_{k}"), 2)} for k in KINDS}
        timings["run"] = {"total": round(time.perf_counter() - t0, 1)}
        print("\nzmd-databricks zoo timings (s):", json.dumps(timings))
        yield run
    finally:
        svc = dbx_deployer.find_deployment(NAME)
        if svc is not None:
            dbx_deployer.delete(svc)


@pytest.mark.parametrize("kind", list(ZOO))
def test_zoo_model_served_by_databricks_answers_as_in_process(zoo_run: Any, kind: str) -> None:
    if reason := missing(kind):
        pytest.skip(reason)
    status, body = answers_of(zoo_run, kind)
    assert status == 200, body
    assert_same_as_in_process(body["predictions"], ZOO[kind]())


def test_each_model_is_a_version_and_the_same_model_registers_once(
    zoo_run: Any,
    dbx_deployer: Any,  # noqa: F811
) -> None:
    svc = dbx_deployer.find_deployment(NAME)
    assert svc.config.model_uri == f"models:/{UC_NAME}/{len(KINDS)}"
    assert svc.status.revision == len(KINDS)
    # The last model, trained again: the version registered for it, not a new one.
    last = ZOO[KINDS[-1]]()
    uri = dbx_deployer.register_model(last.model, UC_NAME, last.example)
    assert uri == svc.config.model_uri


def test_an_unsupported_model_is_refused_before_anything_is_registered(
    dbx_deployer: Any,  # noqa: F811
) -> None:
    class Scorer:
        def predict(self, x: Any) -> Any:
            return x

    with pytest.raises(ConfigurationError) as err:
        dbx_deployer.register_model(Scorer(), "main.zmd.zoo_refused", [[1.0]])
    msg = str(err.value)
    assert "Scorer" in msg and "XGBoost" in msg and "model_version=" in msg

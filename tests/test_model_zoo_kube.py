"""The model zoo through zmd-seldon and zmd-kserve (issue 25): the models users train, deployed
by the typed step's `model=` in a pipeline onto the simulated cluster, whose model server is a
real MLServer with the runtimes Seldon Core 2 and KServe pick for each format (sklearn,
xgboost, lightgbm; mlflow for PyTorch), asked over HTTP with the Open Inference Protocol (V2)
body docs/models.md shows, and answering what the model predicts in process.

Each flavor has ONE deployment; every model is an update of it (a patch the controller loads
into MLServer), so the module starts one MLServer and one deployment per flavor.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests
from kube_support import (  # noqa: F401
    cluster,
    kserve_deployer,
    kserve_stack,
    seldon_deployer,
    seldon_stack,
)
from zenml import pipeline, step
from zoo_models import ZOO, ZooModel, assert_matches

from zenml_model_deployers.errors import ConfigurationError, DeploymentError
from zenml_model_deployers.packaging.native import MLSERVER_RUNTIMES
from zenml_model_deployers.testing.kube_cluster import SimulatedCluster

NAMES = {"zmd-seldon": "zoo-seldon", "zmd-kserve": "zoo-kserve"}
# The format each zoo model is packaged in, and so the runtime that serves it.
FORMATS = {"xgboost": "xgboost", "lightgbm": "lightgbm", "pytorch": "mlflow"}
TIMINGS: dict[str, dict[str, float]] = {}


@cache
def trained(kind: str) -> ZooModel:
    """A zoo model, fitted once per module (both flavors serve the same one)."""
    return ZOO[kind]()


def v2_request(rows: Any) -> dict[str, Any]:
    """The V2 body docs/models.md shows: a DataFrame as one input per column (its datatype,
    `content_type: pd`), an array as one tensor; a missing value is null."""

    def tensor(name: str, values: np.ndarray) -> dict[str, Any]:
        kind = values.dtype.kind
        datatype = {"f": "FP32" if values.dtype == np.float32 else "FP64", "i": "INT64"}
        flat = [None if pd.isna(v) else v for v in values.reshape(-1).tolist()]
        return {
            "name": name,
            "shape": list(values.shape),
            "datatype": datatype.get(kind, "BYTES"),
            "data": flat,
        }

    if isinstance(rows, pd.DataFrame):
        columns = [tensor(str(c), rows[c].to_numpy().reshape(-1, 1)) for c in rows.columns]
        return {"parameters": {"content_type": "pd"}, "inputs": columns}
    return {"inputs": [tensor("predict", np.asarray(rows))]}


def ask(svc: Any, body: dict[str, Any]) -> dict[str, Any]:
    """POSTs a V2 body to the deployment's URL with the routing header its flavor needs
    (Seldon's `Seldon-Model`, KServe's `Host`)."""
    headers, _ = svc.format_request([[0.0]])
    r = requests.post(svc.prediction_url, json=body, headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


@step
def train(kind: str) -> tuple[Any, Any]:
    """Fits a zoo model, as a training step returns it (and a few rows as input example)."""
    zoo = trained(kind)
    return zoo.model, zoo.example


@pytest.fixture(scope="module")
def deployers(
    seldon_deployer: Any,  # noqa: F811
    kserve_deployer: Any,  # noqa: F811
    cluster: SimulatedCluster,  # noqa: F811
) -> Iterator[dict[str, Any]]:
    """Both flavors' deployers on the module's cluster; their deployments deleted at the end."""
    both = {"zmd-seldon": seldon_deployer, "zmd-kserve": kserve_deployer}
    yield both
    for flavor, deployer in both.items():
        found = deployer.find_deployment(NAMES[flavor])
        if found is not None:
            deployer.delete(found)
    if TIMINGS:
        print("\nzoo timings (s):", json.dumps(TIMINGS, indent=1))


@pipeline(enable_cache=False)
def zoo_pipeline(kind: str) -> None:
    """train -> both flavors' typed deploy steps with `model=` and `input_example=` (KServe
    over V2)."""
    from zenml_model_deployers.steps import kserve_deployer_step, seldon_deployer_step

    model, example = train(kind)
    seldon_deployer_step(
        model=model, input_example=example, deployment_name=NAMES["zmd-seldon"], timeout=120
    )
    kserve_deployer_step(
        model=model,
        input_example=example,
        deployment_name=NAMES["zmd-kserve"],
        protocol="v2",
        timeout=120,
    )


def deploy_model(deployer: Any, flavor: str, zoo: ZooModel) -> Any:
    """What the typed step's body does with `model=` (`steps._body.deploy_with`): build the
    config from the model object (packaged, uploaded), then deploy it; KServe over V2."""
    extra = {"protocol": "v2"} if flavor == "zmd-kserve" else {}
    config = deployer.build_config(
        model=zoo.model, deployment_name=NAMES[flavor], input_example=zoo.example, **extra
    )
    return deployer.deploy(config, timeout=120)


@pytest.mark.parametrize("flavor", ["zmd-seldon", "zmd-kserve"])
@pytest.mark.parametrize("kind", [k for k in ZOO if k != "pytorch"])
def test_zoo_model_deploys_and_answers_as_in_process(
    deployers: dict[str, Any], flavor: str, kind: str
) -> None:
    deployer = deployers[flavor]
    zoo = trained(kind)
    t0 = time.perf_counter()
    svc = deploy_model(deployer, flavor, zoo)
    answer = ask(svc, v2_request(zoo.rows))
    TIMINGS[f"{flavor} {kind}"] = {"model_to_first_prediction": time.perf_counter() - t0}
    assert_matches(answer["outputs"][0]["data"], zoo)
    assert_matches(svc.predict(zoo.rows), zoo)  # service.predict speaks the same format
    fmt = FORMATS.get(kind, "sklearn")
    settings = Path(svc.config.model_uri) / "model-settings.json"
    if flavor == "zmd-seldon":
        # Seldon Core 2's agent loads the folder by its model-settings.json.
        assert svc.config.requirements == [fmt]
        assert json.loads(settings.read_text())["implementation"] == MLSERVER_RUNTIMES[fmt]
    else:
        # KServe picks the runtime by the model format; the folder holds the model alone.
        assert svc.config.model_format == fmt
        assert not settings.exists()
    if flavor == "zmd-seldon" and kind in ("column-pipeline", "xgboost", "lightgbm"):
        # The same model trained again: the same files, so the same upload and revision
        # (nothing rolls on a re-run). Once per native format; joblib's own test is
        # test_kube_runtime's.
        again = deployer.build_config(
            model=ZOO[kind]().model, deployment_name=NAMES[flavor], input_example=zoo.example
        )
        assert again.model_uri == svc.config.model_uri


def test_seldon_schedules_a_model_on_a_server_with_its_requirements(
    deployers: dict[str, Any],
) -> None:
    """A requirement MLServer lacks (PyTorch is Triton's): Seldon's scheduler places the Model
    nowhere, the deploy fails with its words, and the model before keeps serving."""
    deployer = deployers["zmd-seldon"]
    zoo = trained("lightgbm")
    before = deploy_model(deployer, "zmd-seldon", zoo)  # serving already: no change
    config = deployer.build_config(
        model=trained("random-forest").model,
        deployment_name=NAMES["zmd-seldon"],
        requirements=["pytorch"],
    )
    with pytest.raises(DeploymentError, match=r"failed to schedule model zoo-seldon.*\[pytorch\]"):
        deployer.deploy(config, timeout=60)
    assert_matches(ask(before, v2_request(zoo.rows))["outputs"][0]["data"], zoo)


def test_the_typed_steps_deploy_a_pytorch_module_in_a_pipeline(deployers: dict[str, Any]) -> None:
    """train -> `seldon_deployer_step` and `kserve_deployer_step(model=..., input_example=...)`
    in one pipeline: a PyTorch module (no native MLServer runtime) goes as an MLflow model with
    the example's signature (float32), served by MLServer's mlflow runtime (Seldon's
    requirement / KServe's model format `mlflow`), answering as the module does in process."""
    zoo = trained("pytorch")
    t0 = time.perf_counter()
    zoo_pipeline(kind="pytorch")
    for flavor, deployer in deployers.items():
        svc = deployer.find_deployment(NAMES[flavor])
        assert_matches(ask(svc, v2_request(zoo.rows))["outputs"][0]["data"], zoo)
        assert_matches(svc.predict(zoo.rows), zoo)
        assert (
            svc.config.requirements if flavor == "zmd-seldon" else [svc.config.model_format]
        ) == ["mlflow"]
    TIMINGS["pytorch (pipeline, both flavors)"] = {"run_to_answers": time.perf_counter() - t0}


def test_kserves_own_xgbserver_answers_the_boosters_output(deployers: dict[str, Any]) -> None:
    """Over V1 KServe picks its own xgbserver, which answers `Booster.predict`: an
    XGBClassifier's positive-class probabilities, not the classes MLServer's xgboost runtime
    gives over V2 (the V1 shape: a flat list)."""
    deployer = deployers["zmd-kserve"]
    zoo = trained("xgboost")
    config = deployer.build_config(model=zoo.model, deployment_name=NAMES["zmd-kserve"])
    svc = deployer.deploy(config, timeout=120)
    assert svc.config.protocol == "v1"
    headers, _ = svc.format_request([[0.0]])
    body = {"instances": zoo.rows.to_numpy().tolist()}
    r = requests.post(svc.prediction_url, json=body, headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    got = r.json()["predictions"]
    want = zoo.model.predict_proba(zoo.rows)[:, 1]
    assert np.asarray(got).shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_cells_that_cannot_work_say_why(deployers: dict[str, Any]) -> None:
    """Refused before anything is uploaded or changed, naming the way out."""
    seldon, kserve = deployers["zmd-seldon"], deployers["zmd-kserve"]
    xgb = trained("xgboost").model
    # Seldon Core 1's prepackaged servers: scikit-learn model objects only.
    with pytest.raises(ConfigurationError, match=r"only scikit-learn models for Seldon Core 1"):
        seldon.build_config(model=xgb, deployment_name="zoo-core1", seldon_api="v1")
    # A format whose runtime cannot load the model's library.
    with pytest.raises(
        ConfigurationError,
        match=r"(?s)cannot package a xgboost\.sklearn\.XGBClassifier.*model_uri=",
    ):
        kserve.build_config(model=xgb, deployment_name="zoo-fmt", model_format="sklearn")
    with pytest.raises(ConfigurationError, match=r"not model_format='pytorch'"):
        kserve.build_config(model=xgb, deployment_name="zoo-fmt", model_format="pytorch")
    # An object of no library the packaging layer knows.
    with pytest.raises(
        ConfigurationError, match=r"(?s)builtins\.object.*PyTorch modules.*model_uri="
    ):
        seldon.build_config(model=object(), deployment_name="zoo-none")

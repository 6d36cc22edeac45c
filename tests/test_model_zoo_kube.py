"""The model zoo through zmd-seldon and zmd-kserve (issue 25): the models users train, deployed
by the typed steps' `model=` in ONE pipeline run onto the simulated cluster, whose model server is
a real MLServer with the runtimes Seldon Core 2 and KServe pick for each format (sklearn,
xgboost, lightgbm; mlflow for PyTorch), asked over HTTP with the Open Inference Protocol (V2)
body docs/models.md shows, and answering what the model predicts in process.

The run gives every model its own deployment on each flavor (`seldon_deployer_step` and
`kserve_deployer_step` per model, tests/zoo_pipeline.py): they all stay loaded in the module's one
MLServer, so the tests ask them after the run (updates of a deployment are the lifecycle tests'
subject).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from kube_support import (  # noqa: F401
    cluster,
    kserve_deployer,
    kserve_stack,
    seldon_deployer,
    seldon_stack,
)
from zoo_models import AVAILABLE, ZOO, ZooModel, assert_matches, missing, trained
from zoo_pipeline import post, run_zoo

from zenml_model_deployers.errors import ConfigurationError, DeploymentError
from zenml_model_deployers.packaging.native import MLSERVER_RUNTIMES
from zenml_model_deployers.testing.kube_cluster import SimulatedCluster

FLAVORS = ("zmd-seldon", "zmd-kserve")
# The format each zoo model is packaged in, and so the runtime that serves it.
FORMATS = {"xgboost": "xgboost", "lightgbm": "lightgbm", "pytorch": "mlflow"}
KSERVE_V1 = "zoo-kserve-xgboost-v1"


def name_of(flavor: str, kind: str) -> str:
    """The deployment the zoo's run gives model `kind` on `flavor`."""
    return f"zoo-{flavor.removeprefix('zmd-')}-{kind}"


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
    answer = post(svc, body, headers)
    assert answer["status"] == 200, answer
    return answer["body"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def deployers(
    seldon_deployer: Any,  # noqa: F811
    kserve_deployer: Any,  # noqa: F811
    cluster: SimulatedCluster,  # noqa: F811
) -> dict[str, Any]:
    """Both flavors' deployers on the module's cluster."""
    return {"zmd-seldon": seldon_deployer, "zmd-kserve": kserve_deployer}


@pytest.fixture(scope="module")
def zoo_run(deployers: dict[str, Any]) -> Iterator[Any]:
    """The zoo's pipeline run through both typed steps (KServe over V2), every model in its
    own deployment on each; they (and the V1 one a test makes) are deleted afterwards."""
    from zenml_model_deployers.steps import kserve_deployer_step, seldon_deployer_step

    deploys = {
        "zmd-seldon": seldon_deployer_step.with_options(parameters={"timeout": 120}),
        "zmd-kserve": kserve_deployer_step.with_options(
            parameters={"protocol": "v2", "timeout": 120}
        ),
    }
    try:
        yield from run_zoo(deploys, AVAILABLE, deployers, name_of, own_deployments=True)
    finally:
        found = deployers["zmd-kserve"].find_deployment(KSERVE_V1)
        if found is not None:
            deployers["zmd-kserve"].delete(found)


def deploy_model(deployer: Any, name: str, zoo: ZooModel) -> Any:
    """What the typed step's body does with `model=` (`steps._body.deploy_with`): build the
    config from the model object (packaged, uploaded), then deploy it."""
    config = deployer.build_config(model=zoo.model, deployment_name=name, input_example=zoo.example)
    return deployer.deploy(config, timeout=120)


@pytest.mark.parametrize("flavor", FLAVORS)
@pytest.mark.parametrize("kind", list(ZOO))
def test_zoo_model_deployed_by_the_step_answers_as_in_process(
    zoo_run: Any, deployers: dict[str, Any], flavor: str, kind: str
) -> None:
    if reason := missing(kind):
        pytest.skip(reason)
    zoo = trained(kind)
    svc = deployers[flavor].find_deployment(name_of(flavor, kind))
    assert svc is not None, "the run's step deployed it"
    assert_matches(ask(svc, v2_request(zoo.rows))["outputs"][0]["data"], zoo)
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


@pytest.mark.parametrize("kind", ["column-pipeline", "xgboost", "lightgbm"])
def test_the_same_model_trained_again_is_the_same_upload(
    zoo_run: Any, deployers: dict[str, Any], kind: str
) -> None:
    """The same model trained again gives the same files, so the same upload and revision
    (nothing rolls on a re-run). Once per native format; joblib's own test is
    test_kube_runtime's."""
    name = name_of("zmd-seldon", kind)
    first, again = (
        deployers["zmd-seldon"].build_config(
            model=model, deployment_name=name, input_example=trained(kind).example
        )
        for model in (trained(kind).model, ZOO[kind]().model)
    )
    assert again.model_uri == first.model_uri


def test_seldon_schedules_a_model_on_a_server_with_its_requirements(
    zoo_run: Any, deployers: dict[str, Any]
) -> None:
    """A requirement MLServer lacks (PyTorch is Triton's): Seldon's scheduler places the Model
    nowhere, the deploy fails with its words, and the model before keeps serving."""
    deployer = deployers["zmd-seldon"]
    zoo = trained("lightgbm")
    name = name_of("zmd-seldon", "lightgbm")
    before = deploy_model(deployer, name, zoo)  # serving already: no change
    config = deployer.build_config(
        model=trained("random-forest").model, deployment_name=name, requirements=["pytorch"]
    )
    with pytest.raises(DeploymentError, match=rf"failed to schedule model {name}.*\[pytorch\]"):
        deployer.deploy(config, timeout=60)
    assert_matches(ask(before, v2_request(zoo.rows))["outputs"][0]["data"], zoo)


def test_kserves_own_xgbserver_answers_the_boosters_output(
    zoo_run: Any, deployers: dict[str, Any]
) -> None:
    """Over V1 KServe picks its own xgbserver, which answers `Booster.predict`: an
    XGBClassifier's positive-class probabilities, not the classes MLServer's xgboost runtime
    gives over V2 (the V1 shape: a flat list)."""
    deployer = deployers["zmd-kserve"]
    zoo = trained("xgboost")
    config = deployer.build_config(model=zoo.model, deployment_name=KSERVE_V1)
    svc = deployer.deploy(config, timeout=120)
    assert svc.config.protocol == "v1"
    got = ask(svc, {"instances": zoo.rows.to_numpy().tolist()})["predictions"]
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

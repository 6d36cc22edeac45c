"""The model zoo through zmd-bentoml (issue 25): every zoo model trained in a pipeline step,
deployed with `model_deployer_step(model=..., input_example=...)` on a zmd-bentoml stack (the
packaging layer stores it in BentoML's model store, a generated service serves it with
`bentoml serve`), answered over HTTP as docs/flavors/bentoml.md shows, equal to the model's
own predictions.

One pipeline run, one deployment: each model is an update of the previous one (one server start
each), asked before the next rolls out (tests/zoo_pipeline.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from zoo_models import AVAILABLE, ZOO, missing
from zoo_pipeline import (
    ASKERS,
    answers_of,
    assert_same_as_in_process,
    records_body,
    step_seconds,
    zoo_pipeline,
)

from zenml_model_deployers.errors import ConfigurationError

NAME = "zoo-bento"
KINDS = AVAILABLE  # the pytorch cell skips without torch (zoo_models.missing)
ASKERS["zmd-bentoml"] = lambda rows: (records_body(rows), {})


@pytest.fixture(scope="module")
def zoo_run(bentoml_deployer: Any) -> Iterator[Any]:
    """The zoo's pipeline run on a zmd-bentoml stack; the deployment is deleted afterwards."""
    from zenml.client import Client
    from zenml_model_deployers.steps import model_deployer_step

    from zenml_model_deployers.flavors import ensure_deployer_stack

    ensure_deployer_stack("zmd-test-bentoml", "zmd-test-bentoml", "zmd-bentoml")
    deploy = model_deployer_step.with_options(parameters={"deployment_name": NAME, "timeout": 180})
    t0 = time.perf_counter()
    try:
        run = zoo_pipeline(deploy, KINDS, "zmd-bentoml").with_options(run_name="zoo-bento")()
        run = Client().get_pipeline_run(run.id)
        timings = {k: {"deploy_step": round(step_seconds(run, f"deploy_{k}"), 2)} for k in KINDS}
        timings["run"] = {"total": round(time.perf_counter() - t0, 1)}
        print("\nzmd-bentoml zoo timings (s):", json.dumps(timings))
        yield run
    finally:
        svc = bentoml_deployer.find_deployment(NAME)
        if svc is not None:
            bentoml_deployer.delete(svc)


@pytest.mark.parametrize("kind", list(ZOO))
def test_zoo_model_served_by_bentoml_answers_as_in_process(zoo_run: Any, kind: str) -> None:
    if reason := missing(kind):
        pytest.skip(reason)
    status, body = answers_of(zoo_run, kind)
    assert status == 200, body
    assert_same_as_in_process(body, ZOO[kind]())


def test_every_model_was_an_update_of_one_deployment_and_a_rerun_changes_nothing(
    zoo_run: Any, bentoml_deployer: Any
) -> None:
    svc = bentoml_deployer.find_deployment(NAME)
    assert svc.status.revision == len(KINDS)
    urls = {zoo_run.steps[f"deploy_{k}"].run_metadata["deployed_model_url"] for k in KINDS}
    assert urls == {svc.prediction_url}
    # The last model, trained again: the same stored model and bento, so the same revision.
    last = ZOO[KINDS[-1]]()
    config = bentoml_deployer.build_config(
        model=last.model, deployment_name=NAME, input_example=last.example
    )
    assert config.model_uri == svc.config.model_uri


def test_an_unsupported_model_is_refused_naming_the_way_out(bentoml_deployer: Any) -> None:
    class Scorer:
        def predict(self, x: Any) -> Any:
            return x

    with pytest.raises(ConfigurationError) as err:
        bentoml_deployer.build_config(model=Scorer(), deployment_name="zoo-bento-refused")
    msg = str(err.value)
    assert "Scorer" in msg and "scikit-learn" in msg and "PyTorch" in msg
    assert "bento_builder_step" in msg and "model_uri=" in msg


def test_generated_bentos_of_two_deployments_in_one_process_serve_their_own_model(
    bentoml_deployer: Any,
) -> None:
    """Two model objects deployed under two names by one process (one pipeline): each bento
    names its own service and model. BentoML imports the generated module to build a bento;
    under a shared module name the second bento got the first one's cached service."""
    import bentoml

    tags = {}
    for kind, name in (("logistic-regression", "zoo-bento-one"), ("lightgbm", "zoo-bento-two")):
        z = ZOO[kind]()
        tags[name] = bentoml_deployer.build_config(
            model=z.model, deployment_name=name, input_example=z.example
        ).model_uri
    for name, tag in tags.items():
        info = bentoml.bentos.get(tag).info
        assert [s.name for s in info.services] == [name.replace("-", "_")]
        assert [str(m.tag).split(":")[0] for m in info.models] == [name.replace("-", "_")]

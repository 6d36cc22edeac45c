"""The model zoo through zmd-bentoml (issue 25): every zoo model trained in a pipeline step,
deployed with `model_deployer_step(model=..., input_example=...)` on a zmd-bentoml stack (the
packaging layer stores it in BentoML's model store, a generated service serves it with
`bentoml serve`), answered over HTTP as docs/flavors/bentoml.md shows, equal to the model's
own predictions.

One pipeline run, one deployment: each model is an update of the previous one (one server start
each), asked before the next rolls out (tests/zoo_pipeline.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from zoo_models import AVAILABLE, ZOO, assert_matches, missing, trained
from zoo_pipeline import (
    ASKERS,
    answers_of,
    post,
    records_body,
    run_zoo,
    step_id,
)

from zenml_model_deployers.errors import ConfigurationError

NAME = "zoo-bento"
KINDS = AVAILABLE  # the pytorch cell skips without torch (zoo_models.missing)
ASKERS["zmd-bentoml"] = lambda service, rows: post(service, records_body(rows))


@pytest.fixture(scope="module")
def zoo_run(bentoml_deployer: Any) -> Iterator[Any]:
    """The zoo's pipeline run on a zmd-bentoml stack; the deployment is deleted afterwards."""
    from zenml_model_deployers.steps import model_deployer_step

    from zenml_model_deployers.flavors import ensure_deployer_stack

    ensure_deployer_stack("zmd-test-bentoml", "zmd-test-bentoml", "zmd-bentoml")
    deploy = model_deployer_step.with_options(parameters={"deployment_name": NAME, "timeout": 180})
    flavor = "zmd-bentoml"
    yield from run_zoo({flavor: deploy}, KINDS, {flavor: bentoml_deployer}, lambda f, k: NAME)


@pytest.mark.parametrize("kind", list(ZOO))
def test_zoo_model_served_by_bentoml_answers_as_in_process(zoo_run: Any, kind: str) -> None:
    if reason := missing(kind):
        pytest.skip(reason)
    answer = answers_of(zoo_run, kind, "zmd-bentoml")
    assert answer["status"] == 200, answer
    assert_matches(answer["body"], trained(kind))


def test_every_model_was_an_update_of_one_deployment_and_a_rerun_changes_nothing(
    zoo_run: Any, bentoml_deployer: Any
) -> None:
    svc = bentoml_deployer.find_deployment(NAME)
    assert svc.status.revision == len(KINDS)
    steps = [zoo_run.steps[step_id("zmd-bentoml", "deploy", k)] for k in KINDS]
    urls = {s.run_metadata["deployed_model_url"] for s in steps}
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

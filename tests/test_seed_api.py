"""The Python API exactly as ZenML's "Model Deployers" page uses it, for every flavor.

The page's snippet (ZenML's "Model Deployers" page, as published) finds a deployment with
``find_model_server(pipeline_name=..., pipeline_step_name=..., model_name=...)``, starts it when
it does not run, deploys it when there is none. It runs here as written, adapted only by the
flavor (its deployer class, and the model reference and settings its ``deploy_model`` takes).
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hf_support import NAMESPACE, TOKEN_REF, hf_deployer, hf_double, hf_stack  # noqa: F401

from zenml_model_deployers.cli import main as zmd

# ZenML's snippet, verbatim but for {deployer_module}/{deployer_class} and {deploy_kwargs}.
SEED_SNIPPET = """
from {deployer_module} import {deployer_class}

model_deployer = {deployer_class}.get_active_model_deployer()
services = model_deployer.find_model_server(
    pipeline_name="LLM_pipeline",
    pipeline_step_name="huggingface_model_deployer_step",
    model_name="{model_name}",
)
if services:
    if services[0].is_running:
        print(
            f"Model server {{services[0].config['model_name']}} is running at {{services[0].status['prediction_url']}}"
           )
    else:
        print(f"Model server {{services[0].config['model_name']}} is not running")
        model_deployer.start_model_server(services[0])
else:
    print("No model server found")
    service = model_deployer.deploy_model(
        pipeline_name="LLM_pipeline",
        pipeline_step_name="huggingface_model_deployer_step",
        model_name="{model_name}",
{deploy_kwargs}
    )
    print(f"Model server {{service.config['model_name']}} is deployed at {{service.status['prediction_url']}}")
"""


def _run_seed(deployer_module: str, deployer_class: str, model: str, kwargs: str) -> str:
    code = SEED_SNIPPET.format(
        deployer_module=deployer_module,
        deployer_class=deployer_class,
        model_name=model,
        deploy_kwargs=kwargs,
    )
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "<seed snippet>", "exec"), {})
    return out.getvalue()


def _flavor_case(flavor: str, request: pytest.FixtureRequest) -> tuple[str, str, str, Any]:
    """(deployer module, deployer class, deploy_model kwargs as source, deployer) for a flavor,
    with a stack using that flavor made active."""
    from zenml.client import Client

    if flavor == "zmd-mlflow":
        request.getfixturevalue("mlflow_stack")
        models_dir: Path = request.getfixturevalue("models_dir")
        deployer = request.getfixturevalue("mlflow_deployer")
        kwargs = f'        model_uri="{models_dir / "a"}",'
        return "zenml_model_deployers.flavors.mlflow.deployer", "MLflowDeployer", kwargs, deployer
    if flavor == "zmd-bentoml":
        request.getfixturevalue("bentoml_stack")
        bentos: dict[str, str] = request.getfixturevalue("bentos")
        deployer = request.getfixturevalue("bentoml_deployer")
        kwargs = f'        model_uri="{bentos["a"]}",\n        api="classify",'
        return (
            "zenml_model_deployers.flavors.bentoml.deployer",
            "BentoMLDeployer",
            kwargs,
            deployer,
        )
    stack = request.getfixturevalue("hf_stack")
    deployer = request.getfixturevalue("hf_deployer")
    Client().activate_stack(stack)
    # The page's own keyword arguments, with values the offline double accepts (a secret
    # reference where the page shows a token: a plain token is refused by design).
    kwargs = (
        '        model_uri="zmd-test/sentiment",\n'
        '        revision="main",\n'
        '        task="text-classification",\n'
        '        region="us-east-1",\n'
        '        vendor="aws",\n'
        f'        token="{TOKEN_REF}",\n'
        f'        namespace="{NAMESPACE}",\n'
        '        endpoint_type="public",'
    )
    return (
        "zenml_model_deployers.flavors.huggingface.deployer",
        "HuggingFaceDeployer",
        kwargs,
        deployer,
    )


@pytest.mark.parametrize("flavor", ["zmd-mlflow", "zmd-bentoml", "zmd-huggingface"])
def test_the_seed_snippet_finds_starts_and_deploys_by_model_name(
    flavor: str, request: pytest.FixtureRequest
) -> None:
    module, cls, kwargs, deployer = _flavor_case(flavor, request)
    model = f"seed-model-{flavor.removeprefix('zmd-')}"
    # Another deployment of this flavor, another model and pipeline: never returned for
    # `model_name=...` (ZenML's own find_model_server returned it).
    decoy_kwargs = kwargs.replace('"LLM_pipeline"', '"other_pipeline"')
    _run_seed(module, cls, f"decoy-{model}", decoy_kwargs)
    try:
        first = _run_seed(module, cls, model, kwargs)
        assert first.startswith("No model server found")
        assert f"Model server {model} is deployed at http://" in first
        found = deployer.find_model_server(
            pipeline_name="LLM_pipeline",
            pipeline_step_name="huggingface_model_deployer_step",
            model_name=model,
        )
        assert [s.config.model_name for s in found] == [model]
        svc = found[0]
        url = svc.prediction_url

        second = _run_seed(module, cls, model, kwargs)
        assert second.strip() == f"Model server {model} is running at {url}"

        deployer.stop(svc)
        third = _run_seed(module, cls, model, kwargs)
        assert third.strip() == f"Model server {model} is not running"
        again = deployer.find_model_server(model_name=model, running=True)
        assert [s.uuid for s in again] == [svc.uuid]
        assert again[0].prediction_url == url

        # Every filter the page shows selects on the deployment's own fields.
        assert deployer.find_model_server(model_name=f"decoy-{model}") != []
        assert deployer.find_model_server(model_name=model, pipeline_name="other_pipeline") == []
        assert deployer.find_model_server(pipeline_step_name="nope") == []
        assert [s.uuid for s in deployer.find_model_server(service_uuid=svc.uuid)] == [svc.uuid]
        assert [s.uuid for s in deployer.find_model_server(config=svc.config)] == [svc.uuid]
        assert deployer.find_model_server(config=svc.config.model_dump())[0].uuid == svc.uuid
        assert deployer.find_model_server(flavor="zmd-somethingelse") == []
        deployer.stop(svc)
        assert deployer.find_model_server(model_name=model, running=True) == []
        # As in ZenML (its CLI passes running=False without --running): False is no filter.
        stopped = deployer.find_model_server(model_name=model, running=False)
        assert [s.uuid for s in stopped] == [svc.uuid]
        assert not stopped[0].is_running
    finally:
        for name in (model, f"decoy-{model}"):
            for s in deployer.find_model_server(model_name=name):
                deployer.delete(s)
    assert deployer.find_model_server(model_name=model) == []


def test_delete_is_idempotent_in_python_and_on_the_command_line(
    mlflow_deployer: Any, models_dir: Path
) -> None:
    from zenml_model_deployers.flavors.mlflow.config import MLflowDeploymentConfig

    cfg = MLflowDeploymentConfig(deployment_name="delete-twice", model_uri=str(models_dir / "a"))
    svc = mlflow_deployer.deploy(cfg, timeout=120)
    url = svc.prediction_url
    mlflow_deployer.delete(svc)
    assert mlflow_deployer.find_deployment("delete-twice") is None
    mlflow_deployer.delete(svc)  # already deleted: a no-op, no error
    mlflow_deployer.delete_model_server(svc.uuid)  # ZenML's API, by id: a no-op too

    # A deployment created again under the same name is not touched by the stale object.
    again = mlflow_deployer.deploy(cfg, timeout=120)
    try:
        mlflow_deployer.delete(svc)
        assert again.predict([[1.0, 2.0]]) == [0]
        assert mlflow_deployer.find_deployment("delete-twice").uuid == again.uuid
    finally:
        mlflow_deployer.delete(again)

    res = CliRunner().invoke(zmd, ["models", "delete", "delete-twice", "-y"])
    assert res.exit_code == 0, res.output
    assert "No deployment matches 'delete-twice': nothing to delete." in res.output
    assert url  # the first deployment had a URL

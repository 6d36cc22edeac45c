"""Deploy steps in real pipelines: failures fail the run, deploy_decision, ZenML Model links."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from zenml import Model, pipeline
from zenml.client import Client
from zenml_model_deployers.steps import mlflow_deployer_step, model_deployer_step


def test_a_failed_deploy_fails_the_run(mlflow_stack: str, tmp_path: Path) -> None:
    @pipeline(enable_cache=False)
    def bad_deploy() -> None:
        mlflow_deployer_step(model_uri=str(tmp_path / "nope"), deployment_name="bad-step")

    with pytest.raises(RuntimeError):
        bad_deploy.with_options(run_name="bad-deploy-run")()
    run = Client().get_pipeline_run("bad-deploy-run")
    assert run.status.value == "failed"
    assert "deployed_model_url" not in run.steps["mlflow_deployer_step"].run_metadata


def test_deploy_decision_false_keeps_what_serves(
    mlflow_stack: str, models_dir: Path, mlflow_deployer: Any
) -> None:
    @pipeline(enable_cache=False, model=Model(name="gated-model"))
    def gated(uri: str, decision: bool) -> None:
        model_deployer_step(
            model_uri=uri, deployment_name="gated", deploy_decision=decision, timeout=120
        )

    try:
        gated.with_options(run_name="gated-1")(uri=str(models_dir / "a"), decision=True)
        first = mlflow_deployer.find_deployment("gated")
        assert first is not None and first.predict([[0.0, 0.0]]) == [0]
        # A worse model (decision False): the deployed one stays, and the run says where it is.
        gated.with_options(run_name="gated-2")(uri=str(models_dir / "b"), decision=False)
        kept = mlflow_deployer.find_deployment("gated")
        assert kept.status.config_hash == first.status.config_hash
        assert kept.predict([[0.0, 0.0]]) == [0]
        md = Client().get_pipeline_run("gated-2").steps["model_deployer_step"].run_metadata
        assert md["deployed_model_url"] == first.prediction_url
        # The service is linked to the run's ZenML model version.
        row = Client().get_service(first.uuid)
        assert row.model_version is not None and row.model_version.model.name == "gated-model"
    finally:
        svc = mlflow_deployer.find_deployment("gated")
        if svc is not None:
            mlflow_deployer.delete(svc)


def test_deploy_decision_false_without_a_deployment_is_a_clear_error(
    mlflow_stack: str, models_dir: Path
) -> None:
    @pipeline(enable_cache=False)
    def gated_first() -> None:
        mlflow_deployer_step(
            model_uri=str(models_dir / "a"), deployment_name="never-deployed", deploy_decision=False
        )

    with pytest.raises(RuntimeError):
        gated_first.with_options(run_name="gated-first")()
    assert Client().get_pipeline_run("gated-first").status.value == "failed"

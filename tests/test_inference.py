"""Inference steps against a real deployed MLflow model."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import pytest
from zenml import pipeline, step
from zenml.client import Client
from zenml_model_deployers.steps import (
    batch_inference_step,
    mlflow_deployer_step,
    prediction_step,
)

from zenml_model_deployers.errors import ConfigurationError, PredictionError
from zenml_model_deployers.inference import batch_predict


@step
def rows(n: int) -> Annotated[pd.DataFrame, "rows"]:
    """n rows of two features."""
    return pd.DataFrame({"f1": [float(i) for i in range(n)], "f2": [1.0] * n})


def test_deploy_then_batch_inference_into_an_artifact_and_a_database(
    mlflow_stack: str, models_dir: Path, mlflow_deployer: Any, tmp_path: Path
) -> None:
    db = tmp_path / "preds.db"

    @pipeline(enable_cache=False)
    def score() -> None:
        service = mlflow_deployer_step(
            model_uri=str(models_dir / "b"), deployment_name="scorer", timeout=120
        )
        data = rows(23)
        batch_inference_step(
            service=service,
            data=data,
            batch_size=5,
            concurrency=3,
            database_url=f"sqlite:///{db}",
            table="scores",
        )
        prediction_step(service=service, data=[[0.0, 0.0]])

    try:
        run = score.with_options(run_name="score-run")()
        assert run is not None
        run = Client().get_pipeline_run(run.id)
        batch = run.steps["batch_inference_step"]
        frame = batch.outputs["predictions"][0].load()
        assert list(frame.columns) == ["f1", "f2", "prediction"]
        assert frame["f1"].tolist() == [float(i) for i in range(23)]  # input order kept
        assert frame["prediction"].tolist() == [1] * 23
        report = batch.run_metadata["batch_inference"]
        assert report["rows"] == 23 and report["batches"] == 5 and report["table"] == "scores"
        with sqlite3.connect(db) as con:
            assert con.execute("select count(*), sum(prediction) from scores").fetchone() == (
                23,
                23,
            )
        assert run.steps["prediction_step"].outputs["predictions"][0].load() == [1]
        # A batch the model refuses: a typed error naming the rows, nothing returned.
        svc = mlflow_deployer.find_deployment("scorer")
        with pytest.raises(PredictionError, match="Batch 1/1"):
            batch_predict(svc, [[1.0], [1.0, 2.0]], batch_size=4)
        with pytest.raises(ConfigurationError):
            batch_predict(svc, [[0.0, 0.0]], batch_size=0)
        # Without batch_size: the flavor's own (zmd-mlflow: 8192 rows per request).
        _, defaults = batch_predict(svc, pd.DataFrame({"f1": [0.0] * 8193, "f2": [1.0] * 8193}))
        assert (defaults.rows, defaults.batches) == (8193, 2)
    finally:
        svc = mlflow_deployer.find_deployment("scorer")
        if svc is not None:
            mlflow_deployer.delete(svc)

"""The quickstart pipeline: train a small classifier, deploy it to local MLflow."""

from __future__ import annotations

from typing import Annotated

import pandas as pd
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from zenml import pipeline, step
from zenml_model_deployers.steps import mlflow_deployer_step

DEPLOYMENT = "iris-classifier"


@step
def load_data() -> Annotated[pd.DataFrame, "iris"]:
    """The iris data set (ships with scikit-learn: no download)."""
    frame = load_iris(as_frame=True).frame
    return frame.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))


@step
def train(data: pd.DataFrame, c: float = 1.0) -> Annotated[LogisticRegression, "model"]:
    """A deterministic logistic regression (same data + C = same model = no restart)."""
    x, y = data.drop(columns="target"), data["target"]
    return LogisticRegression(C=c, max_iter=500).fit(x, y)


@step
def sample(data: pd.DataFrame) -> Annotated[pd.DataFrame, "input_example"]:
    """A few rows to store as the model's input example (gives it a signature)."""
    return data.drop(columns="target").head(3)


@pipeline(enable_cache=False)
def train_and_deploy(c: float = 1.0) -> None:
    """Train, then deploy (or update, or keep) the `iris-classifier` deployment."""
    data = load_data()
    model = train(data, c=c)
    mlflow_deployer_step(
        model=model,
        deployment_name=DEPLOYMENT,
        model_name="iris-classifier",
        input_example=sample(data),
        timeout=120,
    )

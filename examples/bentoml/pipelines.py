"""Train a classifier, build a bento from it, serve it locally (flavor `zmd-bentoml`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from zenml import pipeline, step
from zenml_model_deployers.steps import bento_builder_step, bentoml_deployer_step

DEPLOYMENT = "iris-bento"
HERE = str(Path(__file__).resolve().parent)


@step
def train(c: float = 1.0) -> Annotated[LogisticRegression, "model"]:
    """A deterministic logistic regression (same C = same model = same bento = no restart)."""
    x, y = load_iris(return_X_y=True)
    return LogisticRegression(C=c, max_iter=500).fit(np.asarray(x), np.asarray(y))


@pipeline(enable_cache=False)
def train_and_serve_bento(c: float = 1.0) -> None:
    """Train, build the bento, then deploy (or update, or keep) the `iris-bento` deployment."""
    model = train(c=c)
    bento = bento_builder_step(
        model=model,
        service="service.py:IrisClassifier",
        model_name="iris_clf",
        working_dir=HERE,
        labels={"example": "zenml-model-deployers"},
    )
    bentoml_deployer_step(
        bento=bento,
        deployment_name=DEPLOYMENT,
        api="classify",
        smoke_input=[[5.1, 3.5, 1.4, 0.2]],
        timeout=120,
    )

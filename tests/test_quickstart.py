"""The quickstart pipeline (what `make demo` runs): model object -> MLflow model -> served."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import requests

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "quickstart"


def test_train_deploy_rerun_and_update(mlflow_stack: str, mlflow_deployer: Any) -> None:
    sys.path.insert(0, str(EXAMPLE))
    try:
        from pipelines import DEPLOYMENT, train_and_deploy
        from predict import deployed_model_url
    finally:
        sys.path.remove(str(EXAMPLE))
    rows = {
        "dataframe_split": {
            "columns": ["sepal_length", "sepal_width", "petal_length", "petal_width"],
            "data": [[5.1, 3.5, 1.4, 0.2], [7.7, 3.0, 6.1, 2.3]],
        }
    }
    try:
        train_and_deploy(c=1.0)
        url = deployed_model_url()
        assert requests.post(url, json=rows, timeout=30).json()["predictions"] == [0, 2]
        # The README's curl next to the demo, as written, answers what the README prints.
        from test_doc_snippets import ROOT, bash_blocks, printed_answer, run_block

        curl = next(b for b in bash_blocks("README.md") if "get-url iris-classifier" in b)
        assert json.loads(run_block(curl, dict(os.environ), ROOT)) == printed_answer(curl)
        first = mlflow_deployer.find_deployment(DEPLOYMENT)

        # service.predict() sends a DataFrame as MLflow's dataframe_split.
        import pandas as pd

        split = rows["dataframe_split"]
        frame = pd.DataFrame(split["data"], columns=split["columns"])
        assert first.predict(frame) == [0, 2]

        train_and_deploy(c=1.0)  # unchanged model: the running server is reused
        same = mlflow_deployer.find_deployment(DEPLOYMENT)
        assert same.status.revision == first.status.revision
        assert same.status.server.pid == first.status.server.pid
        assert deployed_model_url() == url

        train_and_deploy(c=0.01)  # changed model: rolled out on the same URL
        new = mlflow_deployer.find_deployment(DEPLOYMENT)
        assert new.status.revision == first.status.revision + 1
        assert new.status.config_hash != first.status.config_hash
        assert deployed_model_url() == url
        assert not first.status.server.is_alive()
        assert requests.post(url, json=rows, timeout=30).status_code == 200
    finally:
        svc = mlflow_deployer.find_deployment(DEPLOYMENT)
        if svc is not None:
            mlflow_deployer.delete(svc)

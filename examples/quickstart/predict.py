"""Read the deployed model's URL from the run's step metadata and get predictions from it.

Usage: python predict.py [RUN_NAME_OR_ID]   (default: the latest `train_and_deploy` run)
"""

from __future__ import annotations

import sys

import requests
from zenml.client import Client


def deployed_model_url(run_name_or_id: str | None = None) -> str:
    """The URL the deploy step recorded, the ZenML-docs way.

    Args:
        run_name_or_id: a run; default the latest run of `train_and_deploy`.

    Returns:
        The URL.
    """
    client = Client()
    if run_name_or_id is None:
        run = client.get_pipeline("train_and_deploy").last_run
    else:
        run = client.get_pipeline_run(run_name_or_id)
    deployer_step = run.steps["mlflow_deployer_step"]
    return str(deployer_step.run_metadata["deployed_model_url"])


def main() -> None:
    """Print predictions for three flowers."""
    url = deployed_model_url(sys.argv[1] if len(sys.argv) > 1 else None)
    rows = {
        "columns": ["sepal_length", "sepal_width", "petal_length", "petal_width"],
        "data": [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3]],
    }
    resp = requests.post(url, json={"dataframe_split": rows}, timeout=30)
    resp.raise_for_status()
    print(f"deployed_model_url (from run metadata): {url}")
    print(
        f"predictions for 3 flowers: {resp.json()['predictions']}  (0=setosa 1=versicolor 2=virginica)"
    )


if __name__ == "__main__":
    main()

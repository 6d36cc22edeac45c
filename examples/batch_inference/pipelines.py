"""A nightly scoring job: train, deploy to local MLflow, score a Parquet dataset out of core.

The dataset lives in the artifact store (a local folder here; ``s3://`` or ``gs://`` with a
remote artifact store), is read in chunks, and the predictions land as Parquet part files in
the artifact store and in a SQL table, each chunk exactly once: running the job again
skips what is committed.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from zenml import pipeline, step
from zenml.client import Client
from zenml.io import fileio
from zenml_model_deployers.steps import batch_inference_step, mlflow_deployer_step

DEPLOYMENT = "nightly-scorer"
FEATURES = ["amount", "age_days", "country_risk"]


def transactions(rows: int, seed: int) -> pd.DataFrame:
    """Synthetic transactions (no download)."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "transaction_id": np.arange(rows),
            "amount": rng.gamma(2.0, 50.0, rows),
            "age_days": rng.integers(0, 3650, rows).astype(float),
            "country_risk": rng.random(rows),
        }
    )


def write_dataset(rows: int, files: int = 4) -> str:
    """Writes tonight's transactions as Parquet files into the active artifact store.

    Args:
        rows: how many.
        files: into how many files.

    Returns:
        The dataset's URI (a folder).
    """
    uri = f"{Client().active_stack.artifact_store.path.rstrip('/')}/datasets/transactions"
    fileio.makedirs(uri)
    frame = transactions(rows, seed=7)
    step_rows = -(-rows // files)
    for i in range(files):
        with fileio.open(f"{uri}/part-{i:03d}.parquet", "wb") as fh:
            frame.iloc[i * step_rows : (i + 1) * step_rows].to_parquet(fh)
    return uri


@step
def train() -> Annotated[LogisticRegression, "model"]:
    """A fraud classifier on last month's labelled transactions (deterministic)."""
    history = transactions(5000, seed=1)
    label = (history["amount"] * history["country_risk"] > 60).astype(int)
    return LogisticRegression(max_iter=500).fit(history[FEATURES], label)


@pipeline(enable_cache=False)
def nightly_scoring(data_uri: str, database_url: str) -> None:
    """Train, deploy (or keep) the scorer, score every transaction of the dataset."""
    service = mlflow_deployer_step(model=train(), deployment_name=DEPLOYMENT, timeout=120)
    batch_inference_step(
        service=service,
        data=data_uri,  # a Parquet file or folder, local or in the artifact store
        columns=FEATURES,  # what the model gets; the outputs keep these columns
        chunk_rows=5_000,  # the unit of commit and resume
        batch_size=1_000,  # rows per request
        concurrency=2,  # requests in flight
        database_url=database_url,  # also append to this table (a SQLAlchemy URL)
        table="fraud_scores",
    )

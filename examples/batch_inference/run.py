"""Runs the nightly scoring job twice (the second run resumes: nothing left to do), then
scores the same data with the model loaded in-process (``local=True``), and compares.

Usage: ``python examples/batch_inference/run.py [--delete]`` (``--delete`` removes the
deployment at the end). Uses your ZenML setup; registers a `zmd-mlflow` stack, active only
while it runs (the stack that was active before is active again at the end).
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

from zenml_model_deployers.flavors import keep_active_stack

sys.path.insert(0, str(Path(__file__).parent))


# The user's active stack is active again when it ends (also on failure).
@keep_active_stack()
def main(delete: bool = False) -> None:
    """The whole example.

    Args:
        delete: remove the deployment at the end.
    """
    from zenml.client import Client

    from zenml_model_deployers.batch import run_batch
    from zenml_model_deployers.flavors import ensure_deployer_stack, get_deployer

    ensure_deployer_stack("zmd-batch-example", "zmd-batch-local", "zmd-mlflow")
    from pipelines import DEPLOYMENT, FEATURES, nightly_scoring, write_dataset

    data_uri = write_dataset(rows=20_000)
    db = Path("fraud_scores.db").resolve()
    for night in (1, 2):
        run = nightly_scoring(data_uri=data_uri, database_url=f"sqlite:///{db}")
        assert run is not None
        step = Client().get_pipeline_run(run.id).steps["batch_inference_step"]
        report = step.outputs["predictions"][0].load()
        print(
            f"[batch] run {night}: {report.rows_predicted} rows predicted, "
            f"{report.rows_skipped} skipped (committed before), "
            f"{report.rows_per_second:,.0f} rows/s -> {report.output_uri}"
        )
    with sqlite3.connect(db) as con:
        rows, flagged = con.execute("select count(*), sum(prediction) from fraud_scores").fetchone()
    print(f"[batch] table fraud_scores: {rows} rows, {flagged} flagged")

    deployer = get_deployer("zmd-mlflow")
    service = deployer.find_deployment(DEPLOYMENT)
    import pandas as pd

    served = pd.read_parquet(report.output_uri)
    local, _ = run_batch(data_uri, service, columns=FEATURES, local=True, progress=False)
    same = served["prediction"].tolist() == local["prediction"].tolist()
    print(f"[batch] local=True gives the same predictions: {same}")
    if delete:
        deployer.delete(service)
        print(f"[batch] deleted deployment {DEPLOYMENT}")


if __name__ == "__main__":
    main(delete="--delete" in sys.argv)

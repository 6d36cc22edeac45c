"""Inference steps: send data to a deployed service, keep the predictions."""

from __future__ import annotations

from typing import Annotated, Any

from zenml import log_metadata, step

from zenml_model_deployers.service import DeploymentService


@step(enable_cache=False)
def prediction_step(service: DeploymentService, data: Any) -> Annotated[Any, "predictions"]:
    """One prediction request to a deployed service.

    Args:
        service: the deployment (e.g. a deploy step's output).
        data: a DataFrame, array, list or ready payload.

    Returns:
        The predictions.
    """
    return service.predict(data)


@step(enable_cache=False)
def batch_inference_step(
    service: DeploymentService,
    data: Any,
    batch_size: int = 256,
    concurrency: int = 4,
    timeout: float = 60.0,
    database_url: str | None = None,
    table: str = "predictions",
) -> Annotated[Any, "predictions"]:
    """Predicts every row, in batches sent concurrently over pooled connections.

    The predictions are stored as an artifact (a DataFrame: the input's columns plus
    `prediction`) and, with `database_url` (a SQLAlchemy URL or a `{{secret.key}}` reference),
    appended to `table`. A failed batch fails the step and writes nothing.

    Args:
        service: the deployment.
        data: a DataFrame, numpy array or list of rows.
        batch_size: rows per request.
        concurrency: requests in flight.
        timeout: seconds per request.
        database_url: where to append the predictions, if anywhere.
        table: the table name.

    Returns:
        The predictions DataFrame.
    """
    from zenml_model_deployers.inference import batch_predict, write_predictions

    frame, report = batch_predict(service, data, batch_size, concurrency, timeout)
    if database_url:
        write_predictions(frame, database_url, table)
        report.table = table
    log_metadata(
        metadata={"batch_inference": report.model_dump(), "deployment": service.describe()}
    )
    return frame

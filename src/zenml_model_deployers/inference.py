"""Batch inference against a deployed service: batched, concurrent, pooled connections."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import BaseModel

from zenml_model_deployers.errors import ConfigurationError, PredictionError
from zenml_model_deployers.service import DeploymentService


class BatchReport(BaseModel):
    """What a batch inference did."""

    rows: int
    batches: int
    seconds: float
    rows_per_second: float
    table: str | None = None


def _batches(data: Any, size: int) -> list[Any]:
    n = len(data)
    if hasattr(data, "iloc"):
        return [data.iloc[i : i + size] for i in range(0, n, size)]
    return [data[i : i + size] for i in range(0, n, size)]


def batch_predict(
    service: DeploymentService,
    data: Any,
    batch_size: int | None = None,
    concurrency: int = 4,
    timeout: float = 60.0,
) -> tuple[Any, BatchReport]:
    """Predicts every row of `data`, `concurrency` batches in flight at a time.

    Args:
        service: a deployed service.
        data: a pandas DataFrame, numpy array or list of rows.
        batch_size: rows per request (None: the flavor's default, ``service.BATCH_SIZE``:
            8192 for zmd-mlflow, 256 for flavors that set none).
        concurrency: requests in flight.
        timeout: seconds per request.

    Returns:
        (a DataFrame: the input's columns plus `prediction`, in input order; the report).

    Raises:
        ConfigurationError: bad sizes.
        PredictionError: a batch failed (names the rows); nothing is returned.
    """
    import pandas as pd

    if batch_size is None:
        batch_size = int(service.BATCH_SIZE)
    if batch_size < 1 or concurrency < 1:
        raise ConfigurationError("batch_size and concurrency must be at least 1.")
    batches = _batches(data, batch_size)
    t0 = time.monotonic()

    def run(i: int) -> list[Any]:
        try:
            out = service.predict(batches[i], timeout=timeout)
        except PredictionError as e:
            first = i * batch_size
            raise PredictionError(
                f"Batch {i + 1}/{len(batches)} (rows {first}-{first + len(batches[i]) - 1}) "
                f"failed: {e}",
                deployment_name=service.deployment_name,
            ) from e
        preds = out if isinstance(out, list) else list(out)
        if len(preds) != len(batches[i]):
            raise PredictionError(
                f"Batch {i + 1}: {len(batches[i])} rows sent, {len(preds)} predictions back.",
                deployment_name=service.deployment_name,
            )
        return preds

    with ThreadPoolExecutor(max_workers=min(concurrency, max(1, len(batches)))) as pool:
        results = list(pool.map(run, range(len(batches))))
    seconds = time.monotonic() - t0
    predictions = [p for chunk in results for p in chunk]
    if hasattr(data, "iloc"):
        frame = data.reset_index(drop=True).copy()
    else:
        frame = pd.DataFrame({"input": [list(r) if hasattr(r, "__len__") else r for r in data]})
    frame["prediction"] = predictions
    report = BatchReport(
        rows=len(predictions),
        batches=len(batches),
        seconds=round(seconds, 4),
        rows_per_second=round(len(predictions) / seconds, 1) if seconds > 0 else 0.0,
    )
    return frame, report


def write_predictions(frame: Any, database_url: str, table: str) -> None:
    """Appends predictions to a database table (any SQLAlchemy URL).

    Non-scalar cells (lists, dicts) are stored as JSON text.

    Args:
        frame: the predictions DataFrame.
        database_url: a SQLAlchemy URL, or a `{{secret.key}}` reference to one.
        table: the table name.

    Raises:
        PredictionError: the database refused (its message, redacted).
    """
    import sqlalchemy

    from zenml_model_deployers.secrets import resolve

    url = resolve(database_url)
    out = frame.copy()
    for col in out.columns:
        if out[col].map(lambda v: isinstance(v, list | dict | tuple)).any():
            out[col] = out[col].map(json.dumps)
    engine = sqlalchemy.create_engine(url)
    try:
        out.to_sql(table, engine, if_exists="append", index=False)
    except Exception as e:
        raise PredictionError(
            f"Could not write predictions to table '{table}': {e}",
            hint="check the database URL and that the table's columns match.",
        ) from e
    finally:
        engine.dispose()

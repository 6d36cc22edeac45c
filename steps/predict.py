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
    service: DeploymentService | None,
    data: Any,
    batch_size: int | None = None,
    concurrency: int = 4,
    timeout: float = 60.0,
    database_url: str | None = None,
    table: str = "predictions",
    output_uri: str | None = None,
    columns: list[str] | None = None,
    chunk_rows: int = 65_536,
    local: bool = False,
    model_uri: str | None = None,
    engine: str = "threads",
    retries: int = 5,
    write_parquet: bool = True,
) -> Annotated[Any, "predictions"]:
    """Predicts every row, in batches sent concurrently over pooled connections.

    Two modes:

    - ``data`` is a DataFrame, array or list and no ``output_uri`` is given: the predictions
      are the artifact (a DataFrame: the input's columns plus ``prediction``, in input order)
      and, with ``database_url``, are appended to ``table``. A failed batch fails the step and
      writes nothing.
    - ``data`` is a Parquet file or folder (a path or artifact-store URI, e.g. ``s3://...``),
      or ``output_uri`` is given: the job runs out of core, chunk by chunk, each chunk
      committed exactly once as a Parquet part file under ``output_uri`` (default: a folder
      in the artifact store named after the job; ``write_parquet=False``: none) and/or in
      ``table``. Running the same job
      again skips the committed chunks. The artifact is the job's report (where the
      predictions are, rows, rows/s).

    ``local=True`` loads the model in-process (MLflow pyfunc; ``model_uri`` or the one the
    service serves) instead of calling the service; ``engine="ray"`` predicts on Ray Data.

    Args:
        service: the deployment (may be None with ``local=True`` and ``model_uri``).
        data: a DataFrame, numpy array or list of rows, or a Parquet path/URI.
        batch_size: rows per request (None: the flavor's default, ``service.BATCH_SIZE``:
            8192 for zmd-mlflow, 256 for flavors that set none, e.g. LLM endpoints).
        concurrency: requests in flight (Ray tasks with ``engine="ray"``).
        timeout: seconds per request.
        database_url: where to append the predictions, if anywhere (a SQLAlchemy URL or a
            ``{{secret.key}}`` reference).
        table: the table name.
        output_uri: a folder for Parquet part files (local path or artifact-store URI).
        columns: the input columns sent to the model (None: all).
        chunk_rows: rows per chunk: the unit of commit and resume.
        local: predict in-process, without the server.
        model_uri: the MLflow model for ``local=True``.
        engine: "threads" or "ray".
        retries: retries of a transient failure (connection reset, HTTP 429/503).
        write_parquet: out of core, write Parquet part files (to ``output_uri`` or the
            default folder); False with ``database_url`` writes only the table.

    Returns:
        The predictions DataFrame, or the batch job's report.
    """
    from zenml_model_deployers.batch import RetryPolicy, run_batch
    from zenml_model_deployers.batch.runner import default_batch_size
    from zenml_model_deployers.inference import batch_predict, write_predictions

    deployment = {"deployment": service.describe()} if service is not None else {}
    if batch_size is None:
        batch_size = default_batch_size(service)
    out_of_core = isinstance(data, str) or output_uri is not None
    if not out_of_core and not local and engine == "threads" and service is not None:
        frame, report = batch_predict(service, data, batch_size, concurrency, timeout)
        if database_url:
            write_predictions(frame, database_url, table)
            report.table = table
        log_metadata(metadata={"batch_inference": report.model_dump(), **deployment})
        return frame
    if out_of_core and output_uri is None and write_parquet:
        output_uri = _default_output(data, columns, chunk_rows)
    result, job = run_batch(
        data,
        service,
        output_uri=output_uri,
        database_url=database_url if out_of_core else None,
        table=table,
        columns=columns,
        chunk_rows=chunk_rows,
        batch_size=batch_size,
        concurrency=concurrency,
        timeout=timeout,
        retry=RetryPolicy(attempts=retries + 1),
        local=local,
        model_uri=model_uri,
        engine=engine,  # type: ignore[arg-type]
    )
    if not out_of_core and database_url:
        write_predictions(result, database_url, table)
        job.table = table
    log_metadata(metadata={"batch_inference": job.model_dump(), **deployment})
    return result if not out_of_core else job


def _default_output(data: Any, columns: list[str] | None, chunk_rows: int) -> str:
    """A folder in the active artifact store named after the job (the same job, the same
    folder: a re-run resumes)."""
    from zenml.client import Client

    from zenml_model_deployers.batch.runner import job_id_for
    from zenml_model_deployers.batch.sources import open_source

    job_id = job_id_for(open_source(data, columns), chunk_rows)
    root = Client().active_stack.artifact_store.path.rstrip("/")
    return f"{root}/zmd-batch/{job_id}"

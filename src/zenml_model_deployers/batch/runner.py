"""The batch job: chunks in, predictions out, each chunk committed exactly once.

Requests of the next chunk are in flight while the current one is written, so the service
never waits for the writer; at most two chunks are held in memory.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel

from zenml_model_deployers.batch.bookkeeping import (
    BatchProgress,
    Predictor,
    chunk_failure,
    count_skipped,
    with_predictions,
)
from zenml_model_deployers.batch.predictors import (
    LocalPredictor,
    RemotePredictor,
    RetryPolicy,
    local_model_uri,
)
from zenml_model_deployers.batch.sinks import (
    CommitRecord,
    JobManifest,
    MemorySink,
    ParquetSink,
    SqlSink,
)
from zenml_model_deployers.batch.sources import (
    Chunk,
    FrameSource,
    ParquetSource,
    ReadAhead,
    open_source,
)
from zenml_model_deployers.errors import (
    BatchInterruptedError,
    ConfigurationError,
    is_interruption,
)

if TYPE_CHECKING:
    from zenml_model_deployers.service import DeploymentService

Engine = Literal["threads", "ray"]

# Defaults, from bench/bench_batch.py (docs/benchmarks.md): MLflow's scoring server took 8192-row
# Parquet requests at most of its best rate while their bodies stay small (a 4-float-column
# request is about 310 KiB as Parquet, 450 KiB as JSON: under the 1 MiB that proxies such as
# nginx accept by default); a chunk holds whole requests (8 of them), so none is cut short.
# Rows per request without a service to ask (its ``BATCH_SIZE`` otherwise): zmd-mlflow's.
DEFAULT_BATCH_SIZE = 8192
# Whole requests per chunk for every service's default (a multiple of 256 and of 8192).
DEFAULT_CHUNK_ROWS = 8 * DEFAULT_BATCH_SIZE


def default_batch_size(service: DeploymentService | None) -> int:
    """Rows per request when the caller names none: the service's ``BATCH_SIZE``.

    Args:
        service: the deployment, if any.

    Returns:
        ``service.BATCH_SIZE`` (256 unless the flavor sets more), or ``DEFAULT_BATCH_SIZE``
        without a service (``local=True``).
    """
    return DEFAULT_BATCH_SIZE if service is None else int(service.BATCH_SIZE)


# local=True: chunks are predicted together up to this many bytes of input (one model.predict
# and one DataFrame conversion per group instead of per chunk: MLflow's and the model's per-call
# checks cost as much as a cheap model's predictions), then committed one by one as before.
LOCAL_PREDICT_BYTES = 8 * 2**20
# local=True: input read ahead in a thread while a group is predicted (at most this much).
LOCAL_READ_AHEAD_BYTES = 4 * 2**20


class Sink(Protocol):
    """Where committed chunks go."""

    def start(self, job: JobManifest) -> set[int]:
        """Prepares; returns the chunks already committed.

        Args:
            job: the job.
        """

    def write(self, table: Any, record: CommitRecord) -> None:
        """Writes and commits one chunk atomically.

        Args:
            table: the rows with predictions.
            record: the commit record.
        """


class BatchJobReport(BaseModel):
    """What a batch job did (recorded as run metadata; the step's artifact).

    Attributes:
        job_id: the job's identity (input + chunking): the same job resumes.
        rows: rows in the input.
        rows_predicted: rows predicted by this run.
        rows_skipped: rows of chunks committed by an earlier run, skipped.
        chunks: chunks in the input.
        chunks_skipped: chunks committed by an earlier run.
        seconds: this run's duration.
        rows_per_second: rows predicted per second.
        retries: transient failures retried.
        engine: "threads" or "ray".
        predicted_by: the deployment (and revision) or the local model.
        output_uri: the Parquet folder, if any.
        table: the SQL table, if any.
    """

    job_id: str
    rows: int
    rows_predicted: int
    rows_skipped: int
    chunks: int
    chunks_skipped: int
    seconds: float
    rows_per_second: float
    retries: int
    engine: str
    predicted_by: str
    output_uri: str | None = None
    table: str | None = None


def job_id_for(source: ParquetSource | FrameSource, chunk_rows: int) -> str:
    """The job's identity: its input and how it is cut.

    Args:
        source: the input.
        chunk_rows: rows per chunk.

    Returns:
        16 hex digits.
    """
    blob = json.dumps({"input": source.fingerprint(), "chunk_rows": chunk_rows})
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _slices(table: Any, size: int) -> list[tuple[int, Any]]:
    return [(i, table.slice(i, size)) for i in range(0, table.num_rows, size)]


def _interrupted(
    error: BaseException, job: JobManifest, before: set[int], now: list[int]
) -> BaseException:
    """What an interrupted job raises: what is committed (by earlier runs and this one) and
    that the same job resumes, instead of an interruption reported as the backend's words.

    ZenML's ``RunInterruptedException`` (Ctrl-C in a pipeline step) becomes a
    ``BatchInterruptedError``; ``KeyboardInterrupt`` and ZenML's ``RunStoppedException``, whose
    type their callers act on (Ctrl-C stops a script; ZenML does not retry a stopped run), are
    raised as they are, with the same sentence as a note.
    """
    rows_before = sum(min(job.chunk_rows, job.total_rows - i * job.chunk_rows) for i in before)
    chunks, rows = len(before) + now[0], rows_before + now[1]
    message = (
        f"Batch job {job.job_id} was interrupted: {chunks} of {job.chunks} chunks "
        f"({rows} of {job.total_rows} rows) are committed, {now[0]} of them by this run."
    )
    hint = (
        "run the same job again (same input, chunk_rows and outputs): it resumes after the "
        "committed chunks and writes no duplicates."
    )
    if isinstance(error, Exception) and type(error).__name__ != "RunStoppedException":
        return BatchInterruptedError(message, hint=hint)
    error.add_note(f"{message}\nWhat to do: {hint}")
    return error


def run_batch(
    data: Any,
    service: DeploymentService | None = None,
    *,
    output_uri: str | None = None,
    database_url: str | None = None,
    table: str = "predictions",
    columns: list[str] | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    batch_size: int | None = None,
    concurrency: int = 4,
    timeout: float = 60.0,
    retry: RetryPolicy | None = None,
    local: bool = False,
    model_uri: str | None = None,
    engine: Engine = "threads",
    progress: bool = True,
    on_chunk: Callable[[CommitRecord], None] | None = None,
) -> tuple[Any, BatchJobReport]:
    """Predicts every row of a dataset, chunk by chunk, each chunk committed exactly once.

    Guarantees: memory stays bounded by about two chunks (with ``local=True``: chunks up to
    ``LOCAL_PREDICT_BYTES`` of input, predicted together) whatever the input's size; a chunk's
    predictions land in every output or in none; running the same job again (same input,
    same ``chunk_rows``, same outputs) skips the chunks committed before and writes no
    duplicate; a failure names the input rows that failed, with the backend's words.

    Args:
        data: a Parquet file or folder (local path or artifact-store URI such as
            ``s3://...``), or an in-memory DataFrame, numpy array or list of rows.
        service: the deployment to send rows to (not needed with ``local=True`` and
            ``model_uri``).
        output_uri: a folder (local or artifact-store URI) for Parquet part files.
        database_url: a SQLAlchemy URL (or ``{{secret.key}}``) to append predictions to.
        table: the SQL table.
        columns: the input columns sent to the model (None: all); the outputs keep them.
        chunk_rows: rows per chunk (the unit of commit and resume).
        batch_size: rows per request (None: the service's ``BATCH_SIZE``: 8192 for
            zmd-mlflow, 256 for flavors that set none).
        concurrency: requests in flight (threads engine), or Ray tasks in flight, one chunk
            each (ray engine).
        timeout: seconds per request.
        retry: retries of transient failures (default: 5 attempts, 0.2 s doubling).
        local: load the model in-process (MLflow pyfunc) instead of calling the service.
        model_uri: the model for ``local=True`` (default: the one the service serves).
        engine: "threads" (this process) or "ray" (Ray Data; a local Ray without
            ``RAY_ADDRESS``).
        progress: show progress (rows, rows/s).
        on_chunk: called after each chunk is committed.

    Returns:
        (the predictions as a DataFrame when no output is given, else None; the report).

    Raises:
        ConfigurationError: bad sizes, no model, or an output holding another job.
        PredictionError: a batch failed (the rows, the backend's words); earlier chunks
            stay committed.
        BatchInterruptedError: Ctrl-C in a ZenML step: what is committed stays, and the same
            job resumes (a ``KeyboardInterrupt`` outside ZenML stays one, with that as a note).
    """
    if batch_size is None:
        batch_size = default_batch_size(service)
    if chunk_rows < 1 or batch_size < 1 or concurrency < 1:
        raise ConfigurationError("chunk_rows, batch_size and concurrency must be at least 1.")
    if engine not in ("threads", "ray"):
        raise ConfigurationError(f"Unknown engine '{engine}'.", hint='use "threads" or "ray".')
    source = open_source(data, columns)
    is_array = isinstance(source, FrameSource) and source.is_array
    predictor: Predictor
    if local:
        predictor = LocalPredictor(local_model_uri(service, model_uri), is_array)
        if engine == "threads":
            predictor.preload()  # while the outputs open and the first chunks are read
    elif service is None:
        raise ConfigurationError(
            "Batch inference needs a service, or local=True with a model.",
            hint="pass the deployment a deploy step returned, or local=True.",
        )
    else:
        predictor = RemotePredictor(service, timeout, retry or RetryPolicy(), is_array)
    sinks: list[Sink] = []
    if output_uri:
        sinks.append(ParquetSink(output_uri))
    sql = SqlSink(database_url, table) if database_url else None
    if sql is not None:
        sinks.append(sql)
    memory = MemorySink() if not sinks else None
    if memory is not None:
        sinks.append(memory)

    total = source.total_rows
    job = JobManifest(
        job_id=job_id_for(source, chunk_rows),
        source=data if isinstance(data, str) else "in-memory",
        chunk_rows=chunk_rows,
        total_rows=total,
        chunks=(total + chunk_rows - 1) // chunk_rows,
    )
    t0 = time.monotonic()
    try:
        committed = [sink.start(job) for sink in sinks]
        done_everywhere = set.intersection(*committed)
        bar = BatchProgress(total, f"Batch {job.job_id}", progress)
        now = [0, 0]  # chunks, rows committed by this run

        def reported(record: CommitRecord) -> None:
            now[0] += 1
            now[1] += record.rows
            bar.advance(record.rows, predicted=True)
            if on_chunk is not None:
                on_chunk(record)

        def store(out: Any, record: CommitRecord) -> None:
            for sink, done in zip(sinks, committed, strict=True):
                if record.chunk not in done:
                    sink.write(out, record)
            reported(record)

        def commit(chunk: Chunk, preds: Any) -> None:
            record = CommitRecord(
                chunk=chunk.index,
                first_row=chunk.first_row,
                last_row=chunk.last_row,
                rows=chunk.rows,
                predicted_by=predictor.name,
                committed_at=datetime.now(UTC).isoformat(),
            )
            store(with_predictions(chunk.table, preds), record)

        try:
            if engine == "ray":
                from zenml_model_deployers.batch.ray_engine import run_on_ray

                # Workers commit Parquet parts themselves when that is the only output; a
                # database (its URL may hold a secret) and a memory result stay here.
                by_workers = output_uri if sql is None and memory is None else None
                skipped = run_on_ray(
                    source,
                    chunk_rows,
                    done_everywhere,
                    predictor,
                    job,
                    bar,
                    batch_size,
                    concurrency,
                    local,
                    by_workers,
                    store,
                    reported,
                )
            else:
                chunks = source.chunks(chunk_rows, skip=done_everywhere)
                skipped = _run_threads(chunks, predictor, job, commit, bar, batch_size, concurrency)
        except BaseException as e:
            if not is_interruption(e):
                raise
            said = _interrupted(e, job, done_everywhere, now)
            if said is e:
                raise
            raise said from e
        finally:
            bar.close()
    finally:
        if sql is not None:
            sql.close()
    seconds = time.monotonic() - t0
    predicted = total - skipped[1]
    report = BatchJobReport(
        job_id=job.job_id,
        rows=total,
        rows_predicted=predicted,
        rows_skipped=skipped[1],
        chunks=job.chunks,
        chunks_skipped=skipped[0],
        seconds=round(seconds, 4),
        rows_per_second=round(predicted / seconds, 1) if seconds > 0 else 0.0,
        retries=predictor.retries,
        engine=engine,
        predicted_by=predictor.name,
        output_uri=output_uri,
        table=table if database_url else None,
    )
    return (memory.frame() if memory is not None else None), report


def _run_threads(
    chunks: Any,
    predictor: Predictor,
    job: JobManifest,
    commit: Callable[[Chunk, Any], None],
    bar: BatchProgress,
    batch_size: int,
    concurrency: int,
) -> tuple[int, int]:
    """Sends each chunk's batches from a thread pool; commits chunks in order.

    Returns:
        (chunks skipped, rows skipped).
    """
    skipped = [0, 0]
    local = isinstance(predictor, LocalPredictor)
    window: deque[tuple[Chunk, list[tuple[int, int, Future[list[Any]]]]]] = deque()
    # local=True: the input is read ahead in a thread while a group is predicted.
    ahead = ReadAhead(chunks, LOCAL_READ_AHEAD_BYTES) if local else nullcontext(chunks)
    with ThreadPoolExecutor(max_workers=1 if local else concurrency) as pool, ahead as chunks:

        def finish() -> None:
            chunk, futures = window.popleft()
            preds: list[Any] = []
            for offset, rows, fut in futures:
                try:
                    preds.extend(fut.result())
                except BaseException as e:
                    # Requests not started yet are dropped: a failed or interrupted job
                    # stops at once.
                    for _c, pending in window:
                        for _o, _r, f in pending:
                            f.cancel()
                    for _o, _r, f in futures:
                        f.cancel()
                    if is_interruption(e) or not isinstance(e, Exception):
                        raise  # raised in this thread while it waited: not the request's
                    raise chunk_failure(chunk, offset, rows, job, e) from e
            commit(chunk, preds)

        group: list[Chunk] = []
        group_bytes = 0

        def predict_group() -> None:
            # In-process, in this thread (nothing to overlap with on the model's cores): one
            # model.predict over the group's chunks, then each chunk committed in order.
            nonlocal group_bytes
            if not group:
                return
            import pyarrow as pa

            rows = sum(c.rows for c in group)
            try:
                preds = predictor.predict(pa.concat_tables([c.table for c in group]))
            except Exception as e:
                if is_interruption(e):
                    raise
                raise chunk_failure(group[0], 0, rows, job, e) from e
            offset = 0
            for c in group:
                commit(c, preds[offset : offset + c.rows])
                offset += c.rows
            group.clear()
            group_bytes = 0

        try:
            for chunk in chunks:
                if chunk.table is None:
                    predict_group()
                    count_skipped(chunk, job, bar, skipped)
                    continue
                if local:
                    group.append(chunk)
                    group_bytes += chunk.table.nbytes
                    if group_bytes >= LOCAL_PREDICT_BYTES:
                        predict_group()
                    continue
                futures = [
                    (off, part.num_rows, pool.submit(predictor.predict, part))
                    for off, part in _slices(chunk.table, batch_size)
                ]
                window.append((chunk, futures))
                while len(window) > 1:
                    finish()
            predict_group()
            while window:
                finish()
        except BaseException:
            # Requests not started yet are dropped: an interrupted job stops at once.
            for _c, pending in window:
                for _o, _r, f in pending:
                    f.cancel()
            raise
    return skipped[0], skipped[1]

"""The ray engine: Ray workers read, predict and write whole chunks (Ray Data ``map_batches``).

The driver reads only the Parquet footers and makes a reading plan: for each chunk not yet
committed, the pieces of files (path, first row in the file, rows) that make up its fixed row
range. Ray Data maps over those chunk descriptors, one chunk per task: a worker reads its
chunk's row groups itself (``read_chunk``: the same rows and types the default engine reads),
predicts it (the chunk's requests of ``batch_size`` rows against the deployment, or one
``predict`` of the model loaded once per worker with ``local=True``), and, when the only
output is a Parquet folder, writes the part file and its commit record itself (the same
atomic ``ParquetSink.write``) and returns a small result. With a database or an in-memory
result, the worker returns the chunk's Arrow table with its predictions and the driver
writes it (a database URL, which may hold a secret, never travels to workers). An in-memory
input is sliced by the driver and shipped as Arrow (nothing to read).

A failed chunk comes back as data; the driver raises the default engine's error naming its
rows, lets the chunks already started finish (each one committed or not at all: workers note
the chunks they start in the run's folder and first look for its ``stop`` file) and starts no
new one. Ray is the cluster at ``RAY_ADDRESS``, else a local one started here (and shut down
at the end); a Ray already initialised in this process is used as it is.
"""

from __future__ import annotations

import logging
import os
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from zenml_model_deployers.batch.bookkeeping import (
    BatchProgress,
    Predictor,
    chunk_failure,
    count_skipped,
    with_predictions,
)
from zenml_model_deployers.batch.sinks import CommitRecord, JobManifest
from zenml_model_deployers.batch.sources import (
    Chunk,
    FrameSource,
    ParquetSource,
    _open,
    forget_listings,
)
from zenml_model_deployers.errors import PredictionError

# One predictor per worker process and predictor (its whole configuration: the deployment's
# URL, timeout and retries, or the model URI): a local model is loaded once, and a deployment's
# kept-alive connections are reused across chunks and jobs.
_WORKER_PREDICTORS: dict[str, Any] = {}
# (URI scheme, artifact store) pairs whose filesystem this worker process has registered with
# ZenML's fileio (a worker outlives a job: the next job may use another store's credentials).
_WORKER_STORES: set[tuple[str, str | None]] = set()
# In a run's folder (``_zmd_run-<id>`` in the output folder, removed at the end): one file per
# chunk a worker starts, and the file that stops the run after a failure.
STARTED = "started-"
STOP = "stop"


class Piece(NamedTuple):
    """Consecutive rows of one Parquet file that belong to one chunk.

    Attributes:
        path: the file (local path or artifact-store URI).
        start: the first row, counted in the file.
        rows: how many rows.
    """

    path: str
    start: int
    rows: int


@dataclass(frozen=True)
class ChunkPlan:
    """What a worker reads for one chunk.

    Attributes:
        index: the chunk's number.
        first_row: its first input row.
        rows: its rows.
        pieces: the file pieces, in input order.
    """

    index: int
    first_row: int
    rows: int
    pieces: list[Piece]


def plan_chunks(
    files: list[str], file_rows: list[int], chunk_rows: int, skip: set[int]
) -> list[ChunkPlan]:
    """The reading plan from the footers' row counts: chunk ``i`` is input rows
    ``i * chunk_rows`` up to the next multiple, across files (empty files hold none).

    Args:
        files: the Parquet files, in reading order.
        file_rows: rows per file.
        chunk_rows: rows per chunk.
        skip: chunks not to plan (committed).

    Returns:
        One plan per chunk not skipped, in order.
    """
    total = sum(file_rows)
    plans: list[ChunkPlan] = []
    k, file_start = 0, 0  # the file holding row `lo`, and its first input row
    for index in range((total + chunk_rows - 1) // chunk_rows):
        lo, hi = index * chunk_rows, min(total, (index + 1) * chunk_rows)
        while file_start + file_rows[k] <= lo:  # files wholly before this chunk (or empty)
            file_start += file_rows[k]
            k += 1
        if index in skip:
            continue
        pieces, j, start = [], k, file_start
        while start < hi:
            a, b = max(lo, start), min(hi, start + file_rows[j])
            if b > a:
                pieces.append(Piece(files[j], a - start, b - a))
            start += file_rows[j]
            j += 1
        plans.append(ChunkPlan(index, lo, hi - lo, pieces))
    return plans


def read_chunk(pieces: list[Piece], columns: list[str] | None) -> Any:
    """Reads one chunk's pieces: only the row groups that overlap them, streamed in batches
    from the first overlapping row group and stopped once the piece is read (a file written
    as one large row group is not read whole for each of its chunks).

    Local files are read by Arrow natively, URIs through ``fileio`` (the artifact store's
    filesystem), as the default engine reads them; the rows and types are the same as
    ``ParquetSource.chunks`` yields.

    Args:
        pieces: the chunk's pieces.
        columns: the columns to read (None: all).

    Returns:
        A ``pyarrow.Table``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    batches: list[Any] = []
    schema = None
    for piece in pieces:
        end = piece.start + piece.rows
        with _open(piece.path) as fh:
            reader = pq.ParquetFile(fh)
            groups, pos = [], -1  # pos: the file row the first overlapping row group starts at
            at = 0
            for k in range(reader.metadata.num_row_groups):
                n = reader.metadata.row_group(k).num_rows
                if at < end and at + n > piece.start:
                    pos = at if pos < 0 else pos
                    groups.append(k)
                at += n
            for batch in reader.iter_batches(
                batch_size=min(piece.rows, 65_536), row_groups=groups, columns=columns
            ):
                lo, hi = max(piece.start, pos), min(end, pos + batch.num_rows)
                if hi > lo:
                    part = batch.slice(lo - pos, hi - lo)
                    schema = schema if schema is not None else part.schema
                    batches.append(part)
                pos += batch.num_rows
                if pos >= end:
                    break
    return pa.Table.from_batches(batches, schema=schema)


def _has_scheme(uri: str | None) -> bool:
    return bool(uri) and "://" in str(uri) and not str(uri).startswith("file://")


def _artifact_store_id(uris: list[str | None]) -> str | None:
    """The active stack's artifact store (its component id), when a URI needs a filesystem
    that only an artifact store registers (``s3://``, ``gs://``, ...) and the store is one of
    that scheme."""
    schemes = {str(u).split("://", 1)[0] for u in uris if _has_scheme(u)}
    if not schemes:
        return None
    from zenml.client import Client
    from zenml.enums import StackComponentType

    stores = Client().active_stack_model.components.get(StackComponentType.ARTIFACT_STORE)
    if not stores:
        return None
    path = str(stores[0].configuration.get("path", ""))
    return str(stores[0].id) if path.split("://", 1)[0] in schemes else None


def _use_filesystem(uri: str | None, store_id: str | None) -> None:
    """Makes ``fileio`` able to open ``uri`` in this (worker) process.

    A fresh Ray worker has not built the stack's artifact store, which is what registers its
    filesystem (s3fs, gcsfs, ...) with ``fileio``: the worker builds the driver's artifact
    store from its component in the ZenML store, once per process and store (whatever stack
    the worker's own configuration has active); without one, its own active stack's store
    when no filesystem serves the scheme yet.
    """
    if not _has_scheme(uri):
        return
    assert uri is not None
    key = (uri.split("://", 1)[0], store_id)
    if key in _WORKER_STORES:
        return
    from zenml.client import Client

    if store_id is not None:
        from zenml.enums import StackComponentType
        from zenml.stack import StackComponent

        model = Client().get_stack_component(StackComponentType.ARTIFACT_STORE, store_id)
        StackComponent.from_model(model)  # its constructor registers its filesystem
    else:
        from zenml.io.filesystem_registry import default_filesystem_registry

        try:
            default_filesystem_registry.get_filesystem_for_path(uri)
        except ValueError:
            Client().active_stack.artifact_store  # noqa: B018 (building it registers it)
    _WORKER_STORES.add(key)


def _failure_doc(error: Exception, offset: int, rows: int) -> dict[str, Any]:
    return {
        "offset": offset,
        "rows": rows,
        "message": str(error).splitlines()[0] if str(error) else type(error).__name__,
        "backend_message": getattr(error, "backend_message", None) or str(error),
        "status_code": getattr(error, "status_code", None),
        "attempts": getattr(error, "attempts", 1),
        "deployment_name": getattr(error, "deployment_name", None),
    }


def _run_chunk(
    batch: Any,
    predictor: Any,
    columns: list[str] | None,
    batch_size: int,
    local: bool,
    output_uri: str | None,
    run_folder: str | None,
    store_id: str | None,
    predictor_key: str,
) -> Any:
    """One chunk in a worker: read, predict, then write and commit it (``output_uri``) or
    return it (the driver writes it).

    Args:
        batch: one chunk descriptor (a one-row ``pyarrow.Table``).
        predictor: the remote or local predictor.
        columns: the input columns.
        batch_size: rows per request (remote).
        local: the predictor is the model itself (one predict per chunk).
        output_uri: the Parquet folder the worker commits to; None: return the table.
        run_folder: where this run's workers say which chunks they start, and where a
            ``stop`` file means "the job failed: start no chunk" (None: the driver stops the
            execution itself).
        store_id: the driver's artifact store (for URIs with a scheme), or None.
        predictor_key: what identifies the predictor (``_predictor_key``).

    Returns:
        A one-row ``pyarrow.Table``: the chunk, its commit record (JSON) when committed here,
        its failure (JSON) if any, and its rows with predictions (Arrow IPC) for the driver.
    """
    import json

    import pyarrow as pa

    from zenml_model_deployers.batch.sinks import ParquetSink

    item = batch.to_pylist()[0]
    result: dict[str, Any] = {"chunk": item["index"], "record": None, "error": None, "table": None}
    retries = 0
    stage = "reach the input or output"
    try:
        pieces = [Piece(*p) for p in json.loads(item["pieces"])] if item["pieces"] else None
        _use_filesystem(output_uri, store_id)
        _use_filesystem(pieces[0].path if pieces else None, store_id)
        if run_folder is not None:
            from zenml.io import fileio

            # Said before looking for the stop file: a chunk the driver does not see started
            # when it stops the job is never predicted.
            _touch(f"{run_folder}/{STARTED}{item['index']}")
            if fileio.exists(f"{run_folder}/{STOP}"):
                return _result(result)
        stage = "read its chunk of the input"
        if pieces is not None:
            table = read_chunk(pieces, columns)
        else:
            table = pa.ipc.open_stream(item["data"]).read_all()
        mine = _WORKER_PREDICTORS.setdefault(predictor_key, predictor)
        retries = mine.retries
        # As the default engine: the chunk's requests of batch_size rows, their predictions in
        # order; a local model predicts the chunk at once (an array stays an array).
        preds: Any = []
        step = table.num_rows if local else batch_size
        for offset in range(0, table.num_rows, step):
            part = table.slice(offset, step)
            try:
                out = mine.predict(part)
            except Exception as e:
                result["error"] = json.dumps(_failure_doc(e, offset, part.num_rows))
                return _result(result, mine.retries - retries)
            if local:
                preds = out
            else:
                preds.extend(out)
        stage = "write its predictions"
        full = with_predictions(table, preds)
        if output_uri is None:
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, full.schema) as writer:
                writer.write_table(full)
            result["table"] = sink.getvalue().to_pybytes()
            return _result(result, mine.retries - retries)
        record = CommitRecord(
            chunk=item["index"],
            first_row=item["first_row"],
            last_row=item["first_row"] + table.num_rows - 1,
            rows=table.num_rows,
            predicted_by=mine.name,
            committed_at=datetime.now(UTC).isoformat(),
        )
        ParquetSink(output_uri).write(full, record)
        result["record"] = record.model_dump_json()
        return _result(result, mine.retries - retries)
    except Exception as e:  # not a prediction: reading, writing, the artifact store
        doc = _failure_doc(e, 0, item["rows"])
        doc["message"] = f"a Ray worker could not {stage}"
        doc["backend_message"] = f"{type(e).__name__}: {e}"
        result["error"] = json.dumps(doc)
    return _result(result)


def _result(result: dict[str, Any], retries: int = 0) -> Any:
    import pyarrow as pa

    return pa.table(
        {
            "retries": pa.array([retries], pa.int64()),
            "chunk": pa.array([result["chunk"]], pa.int64()),
            "record": pa.array([result["record"]], pa.string()),
            "error": pa.array([result["error"]], pa.string()),
            "table": pa.array([result["table"]], pa.large_binary()),
        }
    )


def _descriptors(source: ParquetSource | FrameSource, chunk_rows: int, skip: set[int]) -> list[Any]:
    """One item per chunk to do: its pieces (Parquet: the worker reads them) or its rows
    (in-memory input: Arrow IPC, sliced here)."""
    import json

    import pyarrow as pa

    if isinstance(source, ParquetSource):
        return [
            {
                "index": p.index,
                "first_row": p.first_row,
                "rows": p.rows,
                "pieces": json.dumps([list(piece) for piece in p.pieces]),
                "data": None,
            }
            for p in plan_chunks(source.files, source.file_rows(), chunk_rows, skip)
        ]
    items = []
    for chunk in source.chunks(chunk_rows, skip):
        if chunk.table is None:
            continue
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, chunk.table.schema) as writer:
            writer.write_table(chunk.table)
        items.append(
            {
                "index": chunk.index,
                "first_row": chunk.first_row,
                "rows": chunk.rows,
                "pieces": None,
                "data": sink.getvalue().to_pybytes(),
            }
        )
    return items


def run_on_ray(
    source: ParquetSource | FrameSource,
    chunk_rows: int,
    skip: set[int],
    predictor: Predictor,
    job: JobManifest,
    bar: BatchProgress,
    batch_size: int,
    concurrency: int,
    local: bool,
    output_uri: str | None,
    store: Callable[[Any, CommitRecord], None],
    committed: Callable[[CommitRecord], None],
) -> tuple[int, int]:
    """Runs every chunk not in ``skip`` on Ray, streaming: chunks complete in any order.

    Args:
        source: the input.
        chunk_rows: rows per chunk.
        skip: chunks committed by an earlier run (not read).
        predictor: the remote or local predictor (pickled to the workers).
        job: the job.
        bar: the progress display.
        batch_size: rows per request against a deployment.
        concurrency: Ray tasks (chunks) in flight.
        local: the predictor loads the model in the workers.
        output_uri: the Parquet folder workers write and commit to (the only output), or
            None: workers return each chunk and ``store`` writes it.
        store: writes and commits a chunk's rows with predictions (driver side).
        committed: reports a chunk a worker committed (progress, ``on_chunk``).

    Returns:
        (chunks skipped, rows skipped).

    Raises:
        PredictionError: a chunk failed in a worker (its rows and the backend's words);
            chunks committed before or beside it stay committed.
    """
    import pyarrow as pa
    import ray

    skipped = [0, 0]
    for index in sorted(i for i in skip if i < job.chunks):
        count_skipped(Chunk(index, index * chunk_rows, None), job, bar, skipped)
    items = _descriptors(source, chunk_rows, skip)
    if not items:
        return skipped[0], skipped[1]

    started_here = False
    if not ray.is_initialized():
        ray.init(
            address=os.environ.get("RAY_ADDRESS") or None,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
        started_here = True
    ray_data_log = logging.getLogger("ray.data")
    level = ray_data_log.level
    # Our progress says what runs; Ray Data's would repeat it (and warn that its bars are off).
    ray_data_log.setLevel(logging.ERROR)
    ctx = ray.data.DataContext.get_current()
    saved = (
        ctx.execution_options.preserve_order,
        ctx.enable_progress_bars,
        ctx.print_on_execution_start,
    )
    # Workers that commit say in this run's folder which chunks they start, and start none
    # after a failure (the driver waits for the ones started, each one committed whole or not
    # at all); without it, the driver ends the execution at once (workers write nothing).
    run_folder = f"{output_uri}/_zmd_run-{uuid.uuid4().hex[:12]}" if output_uri else None
    failures: list[dict[str, Any]] = []
    seen: set[int] = set()
    running: set[int] = set()  # after a failure: chunks started whose result has not come
    iterator: Any = None
    try:
        if run_folder is not None:
            _makedirs(run_folder)
        ctx.execution_options.preserve_order = False  # results as chunks complete
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            _run_chunk,  # type: ignore[arg-type]
            fn_kwargs={
                "predictor": predictor,
                "columns": source.columns,
                "batch_size": batch_size,
                "local": local,
                "output_uri": output_uri,
                "run_folder": run_folder,
                "predictor_key": _predictor_key(predictor),
                "store_id": _artifact_store_id(
                    [output_uri, source.files[0] if isinstance(source, ParquetSource) else None]
                ),
            },
            batch_size=1,
            batch_format="pyarrow",
            compute=ray.data.TaskPoolStrategy(size=concurrency),
            zero_copy_batch=True,
        )
        with warnings.catch_warnings():  # "fewer blocks than tasks" for a short job
            warnings.simplefilter("ignore", UserWarning)
            iterator = iter(
                ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=0)
            )
            for results in _reraise_ray_errors(iterator):
                for row in results.to_pylist():
                    predictor.retries += row["retries"]  # made in the workers
                    seen.add(row["chunk"])
                    running.discard(row["chunk"])
                    if row["error"] is not None:
                        if not failures and run_folder is not None:
                            _touch(f"{run_folder}/{STOP}")
                            running = _started(run_folder) - seen
                        failures.append({"chunk": row["chunk"], **_loads(row["error"])})
                    elif row["record"] is not None:
                        committed(CommitRecord.model_validate_json(row["record"]))
                    elif row["table"] is not None:
                        table = pa.ipc.open_stream(row["table"]).read_all()
                        store(table, _record(row["chunk"], table, job, predictor))
                if failures and not running:
                    break  # the rest of the execution is ended below (no chunk of it runs)
    finally:
        if iterator is not None:
            iterator.close()  # ends Ray Data's execution (a no-op once it has run out)
        if run_folder is not None:
            _remove_folder(run_folder)
        (
            ctx.execution_options.preserve_order,
            ctx.enable_progress_bars,
            ctx.print_on_execution_start,
        ) = saved
        ray_data_log.setLevel(level)
        if started_here:
            ray.shutdown()
    if failures:
        first = min(failures, key=lambda f: (f["chunk"], f["offset"]))
        cause = PredictionError(
            first["message"],
            status_code=first["status_code"],
            deployment_name=first["deployment_name"],
            backend_message=first["backend_message"],
        )
        cause.attempts = first["attempts"]  # type: ignore[attr-defined]
        chunk = Chunk(first["chunk"], first["chunk"] * chunk_rows, None)
        raise chunk_failure(chunk, first["offset"], first["rows"], job, cause)
    return skipped[0], skipped[1]


def _reraise_ray_errors(iterator: Any) -> Any:
    """Ray Data's results; a failure of Ray itself (a worker lost, the cluster gone) as a
    ``PredictionError`` with Ray's words."""
    import ray

    try:
        yield from iterator
    except ray.exceptions.RayError as e:
        raise PredictionError(
            "The batch job's Ray execution failed (not a prediction).",
            backend_message=str(e),
            hint="check the Ray cluster (RAY_ADDRESS) and its workers' logs; chunks committed "
            "so far stay committed: run the same job again to finish it.",
        ) from e


def _predictor_key(predictor: Predictor) -> str:
    """A digest of everything the predictor is made of but its retry count (two services of
    one deployment name behind different URLs, or other retry policies, are two predictors)."""
    import copy
    import hashlib
    import pickle

    clone = copy.copy(predictor)
    clone.retries = 0
    return hashlib.sha256(pickle.dumps(clone)).hexdigest()


def _loads(text: str) -> dict[str, Any]:
    import json

    doc: dict[str, Any] = json.loads(text)
    return doc


def _record(index: int, table: Any, job: JobManifest, predictor: Predictor) -> CommitRecord:
    first = index * job.chunk_rows
    return CommitRecord(
        chunk=index,
        first_row=first,
        last_row=first + table.num_rows - 1,
        rows=table.num_rows,
        predicted_by=predictor.name,
        committed_at=datetime.now(UTC).isoformat(),
    )


def _touch(uri: str) -> None:
    from zenml.io import fileio

    with fileio.open(uri, "wb") as fh:
        fh.write(b"")


def _makedirs(uri: str) -> None:
    from zenml.io import fileio

    fileio.makedirs(uri)


def _started(run_folder: str) -> set[int]:
    """The chunks workers said they started in this run (listed afresh: other processes wrote
    them, and s3fs or gcsfs may hold an older listing)."""
    from zenml.io import fileio

    forget_listings(run_folder)
    names = (str(n).rsplit("/", 1)[-1] for n in fileio.listdir(run_folder))
    return {int(n.removeprefix(STARTED)) for n in names if n.startswith(STARTED)}


def _remove_folder(uri: str) -> None:
    """Removes a folder and what it holds (on object stores, whatever the listing cache of
    this process says: ``fileio.rmtree`` first asks ``isdir``, which s3fs may answer from a
    listing older than the workers' files; the filesystem's recursive delete lists afresh)."""
    from zenml.io.filesystem_registry import default_filesystem_registry

    try:
        default_filesystem_registry.get_filesystem_for_path(uri).rmtree(uri)
    except FileNotFoundError:
        pass

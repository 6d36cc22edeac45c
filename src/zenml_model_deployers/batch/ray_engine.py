"""The ray engine: each chunk's batches predicted by Ray Data ``map_batches`` in Ray workers.

The driver cuts chunks and commits them exactly as the threads engine does (same commit
records, same outputs); the workers predict: they call the deployment, or, with
``local=True``, load the model once per worker process. Ray is the cluster at ``RAY_ADDRESS``,
else a local one started here (and shut down at the end); a Ray already initialised in this
process is used as it is.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from zenml_model_deployers.batch.sinks import JobManifest
from zenml_model_deployers.batch.sources import Chunk
from zenml_model_deployers.errors import PredictionError

# One predictor per worker process and model/deployment: a local model is loaded once, and a
# deployment's kept-alive connections are reused across batches.
_WORKER_PREDICTORS: dict[str, Any] = {}


ROW = "__zmd_row"


def _predict_batch(batch: Any, predictor: Any) -> Any:
    """A Ray Data batch (``pyarrow.Table``) -> its predictions (JSON text: any type travels).

    A failure comes back as data (an ``error`` column naming the batch's input rows and the
    backend's words): Ray Data would wrap a raised exception and lose its cause.
    """
    import pyarrow as pa

    mine = _WORKER_PREDICTORS.setdefault(predictor.name, predictor)
    rows = batch.column(ROW)
    try:
        out = mine.predict(batch.drop_columns([ROW]))
        preds = [json.dumps(p) for p in (out.tolist() if hasattr(out, "tolist") else out)]
        errors: list[str | None] = [None] * len(preds)
    except Exception as e:
        failure = json.dumps(
            {
                "rows": [rows[0].as_py(), rows[-1].as_py()],
                "message": str(e).splitlines()[0] if str(e) else type(e).__name__,
                "backend_message": getattr(e, "backend_message", None) or str(e),
                "status_code": getattr(e, "status_code", None),
                "attempts": getattr(e, "attempts", 1),
                "deployment_name": getattr(e, "deployment_name", None),
            }
        )
        preds, errors = [None] * batch.num_rows, [failure] * batch.num_rows  # type: ignore[list-item]
    return pa.table(
        {"prediction": pa.array(preds, pa.string()), "error": pa.array(errors, pa.string())}
    )


def run_on_ray(
    chunks: Iterator[Chunk],
    predictor: Any,
    job: JobManifest,
    commit: Callable[[Chunk, Any], None],
    bar: Any,
    batch_size: int,
    concurrency: int,
    local: bool,
) -> tuple[int, int]:
    """Predicts every chunk on Ray and commits it.

    Args:
        chunks: the input's chunks (committed ones have no table).
        predictor: the remote or local predictor (pickled to the workers).
        job: the job.
        commit: writes and commits a chunk's predictions.
        bar: the progress display.
        batch_size: rows per ``map_batches`` batch (one request each against a deployment).
        concurrency: Ray tasks in flight.
        local: the predictor loads the model in the workers.

    Returns:
        (chunks skipped, rows skipped).

    Raises:
        PredictionError: a batch failed in a worker (its rows and the backend's words).
    """
    import pyarrow as pa
    import ray

    from zenml_model_deployers.batch.runner import _failure, count_skipped

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
    ray_data_log.setLevel(logging.WARNING)  # our progress says what runs; Ray's repeats it
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        skipped = [0, 0]
        window: list[Chunk] = []

        def run_window() -> None:
            # One Ray dataset per window of chunks (one block each): the workers stay busy
            # across chunk boundaries; the driver commits the chunks in order.
            tables = [
                c.table.append_column(ROW, pa.array(range(c.first_row, c.first_row + c.rows)))
                for c in window
            ]
            ds = ray.data.from_arrow(tables).map_batches(
                _predict_batch,  # type: ignore[arg-type]
                fn_kwargs={"predictor": predictor},
                batch_size=batch_size,
                batch_format="pyarrow",
                compute=ray.data.TaskPoolStrategy(size=concurrency),
                zero_copy_batch=True,
            )
            with warnings.catch_warnings():  # "fewer blocks than tasks" for a short last window
                warnings.simplefilter("ignore", UserWarning)
                out = pa.concat_tables(ray.get(ds.to_arrow_refs()))
            offsets = [0]
            for c in window:
                offsets.append(offsets[-1] + c.rows)  # chunks of a window need not be adjacent
            failed = out.column("error").drop_null()
            if len(failed):
                info = json.loads(failed[0].as_py())
                first, last = info["rows"]
                chunk = next(c for c in window if c.first_row <= first <= c.last_row)
                # Chunks of this window before the failed one are complete: commit them.
                for i in range(window.index(chunk)):
                    commit(window[i], _decode(out, offsets[i], window[i].rows))
                cause = PredictionError(
                    info["message"],
                    status_code=info["status_code"],
                    deployment_name=info["deployment_name"],
                    backend_message=info["backend_message"],
                )
                cause.attempts = info["attempts"]  # type: ignore[attr-defined]
                raise _failure(chunk, first - chunk.first_row, last - first + 1, job, cause)
            for i, chunk in enumerate(window):
                commit(chunk, _decode(out, offsets[i], chunk.rows))
            window.clear()

        for chunk in chunks:
            if chunk.table is None:
                count_skipped(chunk, job, bar, skipped)
                continue
            window.append(chunk)
            if len(window) >= max(2, concurrency):
                run_window()
        if window:
            run_window()
        return skipped[0], skipped[1]
    finally:
        ray_data_log.setLevel(level)
        if started_here:
            ray.shutdown()


def _decode(out: Any, start: int, rows: int) -> list[Any]:
    """A chunk's predictions from the window's result table."""
    return [json.loads(p) for p in out.column("prediction").slice(start, rows).to_pylist()]

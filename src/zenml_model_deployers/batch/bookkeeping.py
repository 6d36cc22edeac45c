"""What both batch engines (threads and Ray) share: the predictor they call, the progress
display, and the bookkeeping of one chunk (its predictions column, the error naming its rows,
a chunk skipped because an earlier run committed it).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Protocol

from zenml_model_deployers.batch.sinks import JobManifest
from zenml_model_deployers.batch.sources import Chunk
from zenml_model_deployers.errors import PredictionError


class Predictor(Protocol):
    """Turns a table of rows into one prediction per row."""

    retries: int

    @property
    def name(self) -> str:
        """What predicts (for commit records)."""

    def predict(self, table: Any) -> Any:
        """Predicts.

        Args:
            table: the rows (``pyarrow.Table``).
        """


class BatchProgress:
    """Rows done and rows/s: a rich bar on a terminal, a line every 10 s otherwise (CI logs)."""

    def __init__(self, total: int, label: str, enabled: bool = True) -> None:
        """Starts the display.

        Args:
            total: rows in the input.
            label: what runs (shown first).
            enabled: False shows nothing.
        """
        self.total = total
        self.done = 0
        self.predicted = 0
        self.t0 = time.monotonic()
        self.next_line = 10.0
        self.enabled = enabled
        self.label = label
        self._progress: Any = None
        if enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("rows · {task.fields[rate]} rows/s"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
            )
            self._task = self._progress.add_task(label, total=total, rate="-")
            self._progress.start()

    @property
    def rate(self) -> float:
        """Rows predicted per second so far."""
        elapsed = time.monotonic() - self.t0
        return self.predicted / elapsed if elapsed > 0 else 0.0

    def advance(self, rows: int, predicted: bool) -> None:
        """Counts a chunk.

        Args:
            rows: its rows.
            predicted: False for a chunk skipped (committed earlier).
        """
        self.done += rows
        if predicted:
            self.predicted += rows
        if self._progress is not None:
            self._progress.update(self._task, completed=self.done, rate=f"{self.rate:,.0f}")
        elif self.enabled and time.monotonic() - self.t0 >= self.next_line:
            print(
                f"{self.label}: {self.done}/{self.total} rows, {self.rate:,.0f} rows/s",
                file=sys.stderr,
                flush=True,
            )
            self.next_line += 10.0

    def close(self) -> None:
        """Stops the display."""
        if self._progress is not None:
            self._progress.stop()


def with_predictions(table: Any, preds: list[Any]) -> Any:
    """The chunk's rows plus a ``prediction`` column (JSON text if Arrow cannot type it).

    Args:
        table: the chunk's rows (``pyarrow.Table``).
        preds: one prediction per row.

    Returns:
        The table with the column appended.
    """
    import pyarrow as pa

    try:
        column = pa.array(preds)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        values = preds.tolist() if hasattr(preds, "tolist") else preds
        column = pa.array([json.dumps(p) for p in values])
    return table.append_column("prediction", column)


def chunk_failure(
    chunk: Chunk, offset: int, rows: int, job: JobManifest, error: Exception
) -> Exception:
    """The error that names the failed rows, with the backend's words first.

    Args:
        chunk: the chunk.
        offset: the first failed row's offset in the chunk.
        rows: how many rows failed.
        job: the job.
        error: what the predictor raised.

    Returns:
        A ``PredictionError`` to raise.
    """
    first = chunk.first_row + offset
    attempts = getattr(error, "attempts", 1)
    tried = f" after {attempts} attempts" if attempts > 1 else ""
    backend = getattr(error, "backend_message", None) or str(error)
    return PredictionError(
        f"Batch inference failed at rows {first}-{first + rows - 1} (chunk {chunk.index} of "
        f"{job.chunks}, job {job.job_id}){tried}: {str(error).splitlines()[0]}",
        status_code=getattr(error, "status_code", None),
        deployment_name=getattr(error, "deployment_name", None),
        backend_message=backend,
        hint=f"chunks before {chunk.index} that were committed stay committed; fix the cause "
        "and run the same job again: it skips them and writes no duplicates.",
    )


def count_skipped(chunk: Chunk, job: JobManifest, bar: BatchProgress, skipped: list[int]) -> None:
    """Counts a chunk committed by an earlier run (its table was not read).

    Args:
        chunk: the chunk.
        job: the job.
        bar: the progress display.
        skipped: [chunks, rows] skipped so far, updated.
    """
    rows = min(job.chunk_rows, job.total_rows - chunk.first_row)
    skipped[0] += 1
    skipped[1] += rows
    bar.advance(rows, predicted=False)

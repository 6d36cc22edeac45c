"""Where batch predictions go, each chunk written exactly once and committed atomically.

- ``ParquetSink``: one part file per chunk (``part-000042.parquet``) in a folder (local path or
  artifact-store URI); a commit record ``_zmd_commits/000042.json`` written after it. A re-run
  rewrites an uncommitted part under the same name, so a crash between the two leaves no
  duplicate. Names starting with ``_`` are skipped by Parquet readers (pandas, pyarrow, Spark).
- ``SqlSink``: the chunk's rows and its commit row (table ``zmd_batch_commits``) inserted in one
  transaction: both land or neither does.
- ``MemorySink``: keeps the chunks (an in-memory input's predictions, returned as a DataFrame).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from zenml_model_deployers.errors import ConfigurationError, PredictionError, is_interruption

COMMITS_TABLE = "zmd_batch_commits"


class JobManifest(BaseModel):
    """What identifies a batch job: the same input cut the same way into the same outputs.

    Attributes:
        job_id: digest of the input's fingerprint and ``chunk_rows``.
        source: the input (a URI, or "in-memory").
        chunk_rows: rows per chunk.
        total_rows: rows in the input.
        chunks: number of chunks.
    """

    job_id: str
    source: str
    chunk_rows: int
    total_rows: int
    chunks: int


class CommitRecord(BaseModel):
    """One committed chunk.

    Attributes:
        chunk: its index.
        first_row: its first input row.
        last_row: its last input row.
        rows: its row count.
        predicted_by: the deployment (name and revision) or local model that predicted it.
        committed_at: when (UTC, ISO 8601).
    """

    chunk: int
    first_row: int
    last_row: int
    rows: int
    predicted_by: str
    committed_at: str


def _now() -> str:
    return datetime.now(UTC).isoformat()


class ParquetSink:
    """Part files plus commit records in one folder.

    Attributes:
        uri: the folder.
    """

    def __init__(self, uri: str) -> None:
        """Names the folder (created when the job starts).

        Args:
            uri: a local path or artifact-store URI.
        """
        self.uri = uri.rstrip("/")

    def part_uri(self, chunk: int) -> str:
        """The part file of a chunk.

        Args:
            chunk: the chunk index.

        Returns:
            Its URI.
        """
        return f"{self.uri}/part-{chunk:06d}.parquet"

    def start(self, job: JobManifest) -> set[int]:
        """Creates the folder or checks it holds this job; returns the committed chunks.

        Args:
            job: the job.

        Returns:
            The indexes of chunks already committed here.

        Raises:
            ConfigurationError: the folder holds another job's output.
        """
        from zenml.io import fileio

        from zenml_model_deployers.batch.sources import forget_listings

        forget_listings(self.uri)  # commit records another process wrote are seen
        manifest = f"{self.uri}/_zmd_job.json"
        fileio.makedirs(f"{self.uri}/_zmd_commits")
        if fileio.exists(manifest):
            with fileio.open(manifest, "r") as fh:
                existing = JobManifest.model_validate_json(fh.read())
            if existing.job_id != job.job_id and (
                (existing.source, existing.total_rows, existing.chunk_rows)
                == (job.source, job.total_rows, job.chunk_rows)
            ):
                raise ConfigurationError(
                    f"Output folder '{self.uri}' holds the predictions of an earlier version "
                    f"of '{job.source}': the input changed since (its files' footers or "
                    "versions differ), so its committed chunks are not this input's.",
                    hint="give a new output_uri for the changed input (or remove the old "
                    "predictions to score it again in place).",
                )
            if existing.job_id != job.job_id:
                raise ConfigurationError(
                    f"Output folder '{self.uri}' holds another batch job's predictions "
                    f"(input '{existing.source}', {existing.total_rows} rows, chunks of "
                    f"{existing.chunk_rows}); this job reads '{job.source}' ({job.total_rows} "
                    f"rows, chunks of {job.chunk_rows}).",
                    hint="a resumed job needs the same input and chunk_rows; give a new "
                    "output_uri for a new job.",
                )
        else:
            _write_atomic(manifest, job.model_dump_json(indent=1).encode())
        committed = set()
        for name in fileio.listdir(f"{self.uri}/_zmd_commits"):
            base = str(name).rsplit("/", 1)[-1]
            if base.endswith(".json") and base[:-5].isdigit():
                committed.add(int(base[:-5]))
        return committed

    def write(self, table: Any, record: CommitRecord) -> None:
        """Writes a chunk's part file, then its commit record.

        Args:
            table: the chunk's rows with their predictions (``pyarrow.Table``).
            record: its commit record.
        """
        import pyarrow.parquet as pq

        part = self.part_uri(record.chunk)
        dictionary = dictionary_columns(table.schema)
        _write_atomic(part, None, lambda fh: pq.write_table(table, fh, use_dictionary=dictionary))
        _write_atomic(
            f"{self.uri}/_zmd_commits/{record.chunk:06d}.json",
            record.model_dump_json().encode(),
        )


def dictionary_columns(schema: Any) -> list[str]:
    """The columns worth Parquet's dictionary encoding: text, binary and categoricals.

    Numbers are left plain: on measured floats, trying a dictionary first (pyarrow's default)
    made writing 5x slower and the file larger.

    Args:
        schema: a ``pyarrow.Schema``.

    Returns:
        Column names.
    """
    import pyarrow as pa

    kinds = (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary)
    return [
        f.name for f in schema if any(k(f.type) for k in kinds) or pa.types.is_dictionary(f.type)
    ]


def _write_atomic(uri: str, data: bytes | None, writer: Any = None) -> None:
    """Writes a temporary file beside ``uri``, then renames it over ``uri``."""
    from zenml.io import fileio

    folder, name = uri.rsplit("/", 1)
    tmp = f"{folder}/_tmp-{uuid.uuid4().hex[:8]}-{name}"
    try:
        with fileio.open(tmp, "wb") as fh:
            if writer is not None:
                writer(fh)
            else:
                fh.write(data)
        fileio.rename(tmp, uri, overwrite=True)
    finally:
        if fileio.exists(tmp):
            fileio.remove(tmp)


def jsonify_cells(frame: Any) -> Any:
    """Stores non-scalar cells (lists, dicts, arrays) as JSON text, for SQL tables.

    Args:
        frame: a DataFrame.

    Returns:
        A copy with those columns converted.
    """
    out = frame.copy()
    for col in out.columns:
        if out[col].map(lambda v: isinstance(v, list | dict | tuple) or hasattr(v, "tolist")).any():
            out[col] = out[col].map(lambda v: json.dumps(v.tolist() if hasattr(v, "tolist") else v))
    return out


class SqlSink:
    """Rows appended to a SQL table, each chunk in one transaction with its commit row.

    Attributes:
        table: the predictions table.
    """

    def __init__(self, database_url: str, table: str) -> None:
        """Names the database (resolved and connected when the job starts).

        Args:
            database_url: a SQLAlchemy URL, or a ``{{secret.key}}`` reference to one.
            table: the predictions table.
        """
        self._url_ref = database_url
        self.table = table
        self._engine: Any = None
        self._commits: Any = None
        self.job_id = ""

    def start(self, job: JobManifest) -> set[int]:
        """Connects, creates the commit table if needed; returns this job's committed chunks.

        Args:
            job: the job.

        Returns:
            The indexes of chunks already committed in this table.

        Raises:
            PredictionError: the database refused (its message, redacted).
        """
        import sqlalchemy as sa

        from zenml_model_deployers.secrets import resolve

        self.job_id = job.job_id
        meta = sa.MetaData()
        self._commits = sa.Table(
            COMMITS_TABLE,
            meta,
            sa.Column("job_id", sa.String(64), primary_key=True),
            sa.Column("target_table", sa.String(255), primary_key=True),
            sa.Column("chunk", sa.Integer, primary_key=True),
            sa.Column("first_row", sa.BigInteger, nullable=False),
            sa.Column("last_row", sa.BigInteger, nullable=False),
            sa.Column("rows", sa.BigInteger, nullable=False),
            sa.Column("predicted_by", sa.String(512), nullable=False),
            sa.Column("committed_at", sa.String(64), nullable=False),
        )
        try:
            self._engine = sa.create_engine(resolve(self._url_ref))
            meta.create_all(self._engine)
            with self._engine.connect() as con:
                rows = con.execute(
                    sa.select(self._commits.c.chunk).where(
                        self._commits.c.job_id == job.job_id,
                        self._commits.c.target_table == self.table,
                    )
                )
                return {int(r[0]) for r in rows}
        except Exception as e:
            self.close()
            if is_interruption(e):
                raise
            raise PredictionError(
                f"Could not open the predictions database for table '{self.table}'.",
                backend_message=str(e),
                hint="check the database URL and that the database is reachable.",
            ) from e

    def write(self, table: Any, record: CommitRecord) -> None:
        """Appends a chunk's rows and its commit row, in one transaction.

        Args:
            table: the chunk's rows with their predictions (``pyarrow.Table``).
            record: its commit record.

        Raises:
            PredictionError: the database refused (its message, redacted); nothing of the
                chunk was written.
        """
        frame = jsonify_cells(table.to_pandas())
        try:
            with self._engine.begin() as con:
                frame.to_sql(self.table, con, if_exists="append", index=False)
                con.execute(
                    self._commits.insert().values(
                        job_id=self.job_id, target_table=self.table, **record.model_dump()
                    )
                )
        except Exception as e:
            if is_interruption(e):
                raise  # rolled back: not the database's refusal
            raise PredictionError(
                f"Could not write rows {record.first_row}-{record.last_row} to table "
                f"'{self.table}'; nothing of them was written.",
                backend_message=str(e),
                hint="check that the table's columns match the predictions.",
            ) from e

    def close(self) -> None:
        """Closes the database connections."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


class MemorySink:
    """Keeps every chunk in memory (for in-memory inputs: the result is one DataFrame).

    Attributes:
        tables: the chunks' tables by index.
    """

    def __init__(self) -> None:
        """Starts empty."""
        self.tables: dict[int, Any] = {}

    def start(self, job: JobManifest) -> set[int]:
        """Nothing is committed before (an in-memory result is not resumable).

        Args:
            job: the job.

        Returns:
            An empty set.
        """
        return set()

    def write(self, table: Any, record: CommitRecord) -> None:
        """Keeps the chunk.

        Args:
            table: the chunk's rows with their predictions.
            record: its commit record.
        """
        self.tables[record.chunk] = table

    def frame(self) -> Any:
        """All chunks as one DataFrame, in input order.

        Returns:
            A pandas DataFrame.
        """
        import pyarrow as pa

        tables = [self.tables[i] for i in sorted(self.tables)]
        return pa.concat_tables(tables).to_pandas() if tables else None

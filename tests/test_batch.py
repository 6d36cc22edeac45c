"""Batch inference at scale against a real MLflow deployment: Parquet in chunks, Parquet part
files and a SQL table out, exactly once per chunk across failures and re-runs, retries of
transient failures only, the model in-process (local=True), an artifact store's filesystem."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import requests

from zenml_model_deployers.batch import RetryPolicy, run_batch
from zenml_model_deployers.batch.sources import ParquetSource
from zenml_model_deployers.errors import ConfigurationError, PredictionError
from zenml_model_deployers.flavors.mlflow.config import MLflowDeploymentConfig

ROWS = 6_000
DEPLOYMENT = "batch-scorer"


def features(n: int) -> pd.DataFrame:
    """n rows whose predictions differ row by row (so order mistakes show)."""
    rng = np.random.default_rng(7)
    return pd.DataFrame({"id": np.arange(n), "f1": rng.normal(size=n), "f2": rng.normal(size=n)})


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A clean Parquet dataset (3 files of uneven size, small row groups), the same with one
    NaN at row 4321, and two MLflow models: a logistic regression (refuses NaN) and the same
    behind an imputer (accepts it)."""
    import mlflow.sklearn
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    root = tmp_path_factory.mktemp("batch")
    frame = features(ROWS)
    x, y = frame[["f1", "f2"]], (frame["f1"] + frame["f2"] > 0).astype(int)
    lr = LogisticRegression().fit(x, y)
    mlflow.sklearn.save_model(lr, str(root / "lr"), serialization_format="pickle")
    imputing = make_pipeline(SimpleImputer(), LogisticRegression()).fit(x, y)
    mlflow.sklearn.save_model(imputing, str(root / "imputing"), serialization_format="pickle")
    dirty = frame.copy()
    dirty.loc[4321, "f1"] = np.nan
    for name, df in (("clean", frame), ("dirty", dirty)):
        (root / name).mkdir()
        for i, (a, b) in enumerate(((0, 2500), (2500, 2600), (2600, ROWS))):
            df.iloc[a:b].to_parquet(root / name / f"part-{i}.parquet", row_group_size=700)
    return {
        "root": root,
        "frame": frame,
        "expected": lr.predict(x).tolist(),
        "lr": str(root / "lr"),
        "imputing": str(root / "imputing"),
    }


@pytest.fixture(scope="module")
def scorer(mlflow_deployer: Any, data: dict[str, Any]) -> Iterator[Any]:
    """The logistic regression, served by a real `mlflow models serve` (one per module)."""
    cfg = MLflowDeploymentConfig(deployment_name=DEPLOYMENT, model_uri=data["lr"])
    svc = mlflow_deployer.deploy(cfg, timeout=120)
    try:
        yield svc
    finally:
        live = mlflow_deployer.find_deployment(DEPLOYMENT)
        if live is not None:
            mlflow_deployer.delete(live)


def read_parts(folder: Path) -> pd.DataFrame:
    return pd.read_parquet(folder)  # skips _zmd_job.json and _zmd_commits/ (leading "_")


def table_rows(db: Path, table: str = "predictions") -> pd.DataFrame:
    with sqlite3.connect(db) as con:
        return pd.read_sql(f"select * from {table}", con)


@pytest.mark.parametrize("whole_groups", [True, False], ids=["groups-read-whole", "streamed"])
def test_chunks_are_the_same_fixed_row_ranges_whatever_is_skipped(
    tmp_path: Path, whole_groups: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resume relies on it: chunk i is rows [i*c, (i+1)*c) across files, empty files and
    row groups, whichever chunks are skipped (whole files of skipped chunks are not read),
    whether row groups are read whole or (larger than the limit) streamed, and through the
    read-ahead thread."""
    import random

    from zenml_model_deployers.batch import sources

    if not whole_groups:
        monkeypatch.setattr(sources, "WHOLE_ROW_GROUP_BYTES", 0)

    sizes, n = [7, 0, 13, 5, 1, 20, 3], 0
    for k, size in enumerate(sizes):
        pd.DataFrame({"id": np.arange(n, n + size)}).to_parquet(
            tmp_path / f"f{k:02d}.parquet", row_group_size=4
        )
        n += size
    (tmp_path / "_SUCCESS.parquet").write_bytes(b"not data")  # "_" names are not data
    source = ParquetSource(str(tmp_path))
    assert source.total_rows == n
    rnd = random.Random(3)
    for c in (1, 3, 4, 5, 8, 13, 100):
        count = -(-n // c)
        for _ in range(25):
            skip = {i for i in range(count) if rnd.random() < 0.5}
            ahead = sources.ReadAhead(source.chunks(c, skip), max_bytes=rnd.choice([0, 64, 10**6]))
            got = list(ahead)
            ahead.close()
            assert [g.index for g in got] == list(range(count))
            for g in got:
                if g.index in skip:
                    assert g.table is None
                else:
                    ids = g.table.column("id").to_pylist()
                    assert ids == list(range(g.index * c, min(n, (g.index + 1) * c)))


def test_ray_workers_read_from_the_footer_plan_exactly_the_chunks_the_driver_reads(
    tmp_path: Path,
) -> None:
    """The ray engine's workers read their chunk's row groups themselves, from a plan made of
    footers only: each chunk equal to what `ParquetSource.chunks` yields (values, types,
    columns), for chunks within a row group, across row groups and across (empty) files."""
    from zenml_model_deployers.batch.ray_engine import plan_chunks, read_chunk

    sizes, n = [7, 0, 13, 5, 1, 20, 3, 0], 0
    for k, (size, group) in enumerate(zip(sizes, [4, 3, 5, 2, 1, 6, 3, 4], strict=True)):
        ids = np.arange(n, n + size)
        pd.DataFrame(
            {"id": ids, "x": ids * 0.5, "s": [f"r{i}" for i in ids], "b": ids % 3 == 0}
        ).to_parquet(tmp_path / f"f{k:02d}.parquet", row_group_size=group)
        n += size
    for columns in (None, ["s", "id"]):
        source = ParquetSource(str(tmp_path), columns)
        for c in (1, 4, 6, 13, 20, 100):
            skip = {1, 3} if c < 20 else set()
            plans = plan_chunks(source.files, source.file_rows(), c, skip)
            driver = [g for g in source.chunks(c, skip) if g.table is not None]
            assert [p.index for p in plans] == [g.index for g in driver]
            for plan, chunk in zip(plans, driver, strict=True):
                got = read_chunk(plan.pieces, columns)
                assert (plan.first_row, plan.rows) == (chunk.first_row, chunk.rows)
                assert got.schema.equals(chunk.table.schema, check_metadata=False)
                assert got.equals(chunk.table), (c, plan)


def test_in_memory_input_local_model_and_service_give_the_same_frame(
    scorer: Any, data: dict[str, Any]
) -> None:
    frame = data["frame"].iloc[:1500]
    served, rep = run_batch(frame[["f1", "f2"]], scorer, chunk_rows=700, progress=False)
    local, lrep = run_batch(frame[["f1", "f2"]], scorer, local=True, chunk_rows=700, progress=False)
    pd.testing.assert_frame_equal(served, local)
    assert served["prediction"].tolist() == data["expected"][:1500]
    assert lrep.predicted_by == f"local model {data['lr']}"
    assert rep.predicted_by.startswith(f"deployment {DEPLOYMENT}")
    # Arrays are sent as arrays and come back with an `input` column, as batch_predict does.
    arr, _ = run_batch(frame[["f1", "f2"]].to_numpy()[:10], scorer, progress=False)
    assert arr["prediction"].tolist() == data["expected"][:10]
    with pytest.raises(ConfigurationError, match="at least 1"):
        run_batch(frame, scorer, chunk_rows=0)


class _Faults:
    """A proxy in front of the real server that answers planted failures first."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.plan: list[str] = []
        self.requests = 0
        self.content_types: list[str] = []
        self.lock = threading.Lock()

    def next(self, content_type: str) -> str:
        with self.lock:
            self.requests += 1
            self.content_types.append(content_type)
            return self.plan.pop(0) if self.plan else "ok"


@pytest.fixture
def faulty(scorer: Any) -> Iterator[tuple[Any, _Faults]]:
    """A copy of the service whose URL is a fault-injecting proxy (127.0.0.1)."""
    faults = _Faults(scorer.prediction_url)
    session = requests.Session()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            action = faults.next(self.headers["Content-Type"])
            if action == "slow":  # a request in flight when the job is interrupted
                time.sleep(2)
                action = "ok"
            if action == "reset":  # RST, as a crashed or restarted server's socket sends
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.connection.close()
                self.close_connection = True
                return
            if action != "ok":
                code, text = int(action), f"planted {action}: model server overloaded"
                self.send_response(code)
                self.send_header("Retry-After", "0")
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text.encode())
                return
            up = session.post(
                faults.upstream, data=body, headers={"Content-Type": self.headers["Content-Type"]}
            )
            self.send_response(up.status_code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(up.content)))
            self.end_headers()
            self.wfile.write(up.content)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    proxied = scorer.model_copy()
    proxied.status = scorer.status.model_copy()
    proxied.status.url = f"http://127.0.0.1:{server.server_address[1]}"
    proxied._session = None
    try:
        yield proxied, faults
    finally:
        server.shutdown()
        server.server_close()
        session.close()


def test_transient_failures_are_retried_with_backoff_and_others_fail_at_once(
    faulty: tuple[Any, _Faults], data: dict[str, Any]
) -> None:
    svc, faults = faulty
    frame = data["frame"][["f1", "f2"]].iloc[:1000]
    fast = RetryPolicy(attempts=4, backoff=0.01)
    faults.plan = ["503", "reset", "429", "ok", "503"]
    out, report = run_batch(
        frame, svc, chunk_rows=500, batch_size=100, concurrency=2, retry=fast, progress=False
    )
    assert out["prediction"].tolist() == data["expected"][:1000]
    assert report.retries == 4 and faults.requests == 10 + 4

    # A 500 is the model's answer, not a transient one: one request, then a typed error
    # naming the rows, the backend's words first.
    frame = frame.iloc[:500]
    faults.plan, faults.requests = ["500"], 0
    with pytest.raises(PredictionError) as err:
        run_batch(frame, svc, chunk_rows=500, batch_size=500, concurrency=1, retry=fast)
    assert faults.requests == 1
    assert "rows 0-499" in str(err.value) and "planted 500" in str(err.value)
    assert err.value.status_code == 500

    # A transient failure that outlasts every attempt: bounded, and said so.
    faults.plan, faults.requests = ["503"] * 4, 0
    with pytest.raises(PredictionError, match="after 4 attempts") as err:
        run_batch(frame, svc, chunk_rows=500, batch_size=500, concurrency=1, retry=fast)
    assert faults.requests == 4 and "overloaded" in str(err.value)

    # DataFrames go to MLflow as Parquet (exact values, a tenth of JSON's CPU); a server that
    # does not take Parquet (415) gets JSON from then on, with the same predictions.
    faults.plan, faults.requests, faults.content_types = ["415"], 0, []
    out, report = run_batch(frame, svc, chunk_rows=250, batch_size=250, concurrency=1, retry=fast)
    assert out["prediction"].tolist() == data["expected"][:500] and report.retries == 0
    assert faults.content_types == ["application/vnd.apache.parquet"] + ["application/json"] * 2


@pytest.mark.parametrize("signal_raises", ["zenml", "keyboard"])
def test_an_interruption_while_a_request_is_in_flight_is_no_prediction_failure(
    faulty: tuple[Any, _Faults], data: dict[str, Any], tmp_path: Path, signal_raises: str
) -> None:
    """The signal lands while the job waits for a request (a timer, as Ctrl-C would):
    ZenML's step handler raises RunInterruptedException there (once reported as the backend's
    words), a plain script's KeyboardInterrupt (it stays one). Either says what is committed
    and that the same job resumes; the queued requests are not sent."""
    from zenml.exceptions import RunInterruptedException

    from zenml_model_deployers.errors import BatchInterruptedError

    svc, faults = faulty
    frame = data["frame"][["f1", "f2"]].iloc[:500]
    args = dict(output_uri=str(tmp_path / "out"), chunk_rows=100, batch_size=50, concurrency=1)
    faults.plan, faults.requests = ["ok", "ok", "slow"], 0

    def handler(signum: int, frame_: Any) -> None:
        if signal_raises == "zenml":
            raise RunInterruptedException("The execution was interrupted.")
        raise KeyboardInterrupt

    def arm(record: Any) -> None:  # once chunk 0 is committed; chunk 1 waits 2 s meanwhile
        if record.chunk == 0:
            signal.setitimer(signal.ITIMER_REAL, 0.3)

    previous = signal.signal(signal.SIGALRM, handler)
    try:
        with pytest.raises((BatchInterruptedError, KeyboardInterrupt)) as err:
            run_batch(frame, svc, progress=False, on_chunk=arm, **args)  # type: ignore[arg-type]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    said = str(err.value) + "".join(getattr(err.value, "__notes__", []))
    if signal_raises == "zenml":
        assert isinstance(err.value, BatchInterruptedError)
        assert err.value.backend_message is None and "Backend said" not in said
    else:
        assert type(err.value) is KeyboardInterrupt
    assert "was interrupted: 1 of 5 chunks (100 of 500 rows) are committed, 1 of them" in said
    assert "run the same job again" in said
    assert faults.requests == 3  # chunk 0's 2, chunk 1's first in flight: the rest not sent
    _, report = run_batch(frame, svc, progress=False, **args)  # type: ignore[arg-type]
    assert report.chunks_skipped == 1 and report.rows_predicted == 400


@pytest.fixture(scope="module")
def s3_bucket(zenml_env: Path) -> Iterator[Any]:
    """A bucket on moto's S3 server (127.0.0.1), and ZenML's S3 artifact store over it, built
    from its stack component as a stack builds it: it registers its s3fs filesystem for
    ``s3://`` with ``fileio``. Yields a boto3 client (what the checks read with, not s3fs)
    and the store."""
    import boto3
    from moto.server import ThreadedMotoServer
    from zenml.client import Client
    from zenml.enums import StackComponentType
    from zenml.stack import StackComponent

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    keys = {"AWS_ACCESS_KEY_ID": "moto", "AWS_SECRET_ACCESS_KEY": "moto"}  # the double's
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(keys)
    client = Client()
    component = client.create_stack_component(
        name="zmd-batch-s3",
        flavor="s3",
        component_type=StackComponentType.ARTIFACT_STORE,
        configuration={
            "path": "s3://zmd-batch",
            "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
        },
    )
    try:
        store = StackComponent.from_model(component)
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        s3.create_bucket(Bucket="zmd-batch")
        yield s3, store
        store.cleanup()
    finally:
        client.delete_stack_component(component.id, StackComponentType.ARTIFACT_STORE)
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def assert_s3_output(s3: Any, prefix: str, chunks: int, expected: list[Any]) -> None:
    """The bucket's folder holds exactly the job's manifest, parts and commit records (nothing
    half-made, no run folder left), and the parts hold the expected predictions in order."""
    listed = s3.list_objects_v2(Bucket="zmd-batch", Prefix=f"{prefix}/")["Contents"]
    keys = sorted(o["Key"].removeprefix(f"{prefix}/") for o in listed)
    parts = [f"part-{i:06d}.parquet" for i in range(chunks)]
    commits = [f"_zmd_commits/{i:06d}.json" for i in range(chunks)]
    assert keys == [*commits, "_zmd_job.json", *parts]
    frames = [
        pd.read_parquet(
            io.BytesIO(s3.get_object(Bucket="zmd-batch", Key=f"{prefix}/{p}")["Body"].read())
        )
        for p in parts
    ]
    assert pd.concat(frames)["prediction"].tolist() == expected


def test_s3_input_and_output_through_the_s3_artifact_store(
    data: dict[str, Any], s3_bucket: Any
) -> None:
    """`s3://` in and out through ZenML's S3 artifact store filesystem (s3fs) against a real S3
    API (moto's server): parts and commit records land as objects, a re-run resumes from them,
    a changed input is not resumed as the committed job."""
    s3_bucket, store = s3_bucket
    for i, name in enumerate(sorted((data["root"] / "clean").iterdir())):
        s3_bucket.put_object(Bucket="zmd-batch", Key=f"in/p{i}.parquet", Body=name.read_bytes())
    args: dict[str, Any] = dict(
        local=True,
        model_uri=data["lr"],
        columns=["f1", "f2"],
        output_uri="s3://zmd-batch/out",
        chunk_rows=2000,
        progress=False,
    )
    _, report = run_batch("s3://zmd-batch/in", **args)
    assert (report.rows, report.chunks, report.rows_predicted) == (ROWS, 3, ROWS)
    assert_s3_output(s3_bucket, "out", 3, data["expected"])
    # The same job again resumes from the commit records in the bucket: nothing predicted.
    _, again = run_batch("s3://zmd-batch/in", **args)
    assert (again.rows_predicted, again.chunks_skipped) == (0, 3)
    # The same folder for another input is refused, not mixed.
    with pytest.raises(ConfigurationError, match="another batch job"):
        run_batch("s3://zmd-batch/in", **{**args, "chunk_rows": 1000})
    # An input file rewritten with other values (same name, same rows) is a changed input:
    # not resumed as the committed job.
    dirty = (data["root"] / "dirty" / "part-2.parquet").read_bytes()
    s3_bucket.put_object(Bucket="zmd-batch", Key="in/p2.parquet", Body=dirty)
    # The same process lists it again (s3fs caches listings and ETags; the job drops them).
    with pytest.raises(ConfigurationError, match="the input changed since"):
        run_batch("s3://zmd-batch/in", **args)


def test_killed_job_resumes_from_its_last_commit_without_duplicates(
    scorer: Any, data: dict[str, Any], tmp_path: Path
) -> None:
    out, db = tmp_path / "out", tmp_path / "scores.db"
    args = dict(
        output_uri=str(out),
        database_url=f"sqlite:///{db}",
        columns=["f1", "f2"],
        chunk_rows=200,
        batch_size=20,
        concurrency=1,
    )
    script = textwrap.dedent(
        f"""
        from zenml_model_deployers.batch import run_batch
        from zenml_model_deployers.flavors import get_deployer
        svc = get_deployer("zmd-mlflow").find_deployment({DEPLOYMENT!r})
        run_batch({str(data["root"] / "clean")!r}, svc, progress=False, **{args!r})
        """
    )
    (tmp_path / "job.py").write_text(script)  # ZenML wants a main module with a file
    proc = subprocess.Popen([sys.executable, str(tmp_path / "job.py")], env=dict(os.environ))
    try:
        deadline = time.monotonic() + 120
        commits = out / "_zmd_commits"
        while time.monotonic() < deadline and proc.poll() is None:
            if commits.exists() and len(list(commits.glob("*.json"))) >= 4:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the job ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    done_before = len(list((out / "_zmd_commits").glob("*.json")))
    assert 4 <= done_before < 30
    with sqlite3.connect(db) as con:
        in_table = con.execute("select count(*) from zmd_batch_commits").fetchone()[0]
    assert done_before - 1 <= in_table <= done_before  # parts are committed first
    _, report = run_batch(str(data["root"] / "clean"), scorer, progress=False, **args)  # type: ignore[arg-type]
    # A chunk committed in one output only is predicted again and written only to the other.
    assert report.chunks_skipped == in_table
    assert report.rows_predicted == ROWS - report.rows_skipped
    parts = read_parts(out)
    assert len(parts) == ROWS and parts["prediction"].tolist() == data["expected"]
    assert len(table_rows(db)) == ROWS
    assert table_rows(db)["prediction"].sum() == sum(data["expected"])
    assert not list(out.glob("_tmp-*"))  # a killed write leaves no part file readers would see


def _interrupt_after_commits(
    script: Path, commits: Path, least: int = 4, started_in_background: bool = False
) -> tuple[str, int]:
    """Runs a job script, sends it SIGINT once ``least`` chunks are committed; its output and
    how many chunks were committed when it ended. ``started_in_background``: SIGINT ignored
    when it starts, as for a job a shell started with ``&`` (ZenML's step handler then raises
    its RunInterruptedException, not KeyboardInterrupt)."""

    def ignore_sigint() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    proc = subprocess.Popen(
        [sys.executable, str(script)],
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=ignore_sigint if started_in_background else None,
    )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            if commits.exists() and len(list(commits.glob("*.json"))) >= least:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the job ended before it could be interrupted"
        os.kill(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode != 0, out
    return out, len(list(commits.glob("*.json")))


def test_ctrl_c_says_what_is_committed_and_that_a_rerun_resumes(
    scorer: Any, data: dict[str, Any], tmp_path: Path
) -> None:
    """SIGINT during a pipeline's batch step: no "Backend said: The execution was interrupted."
    (ZenML's step signal handler raised that; the backend said nothing), but the job, how much
    is committed, and that the same job resumes -- which it then does. Ctrl-C in a script keeps
    its KeyboardInterrupt (so does a pipeline's at a terminal), with the same sentence."""
    out = tmp_path / "out"
    args = dict(output_uri=str(out), columns=["f1", "f2"], chunk_rows=200, batch_size=5)
    (tmp_path / "pipeline_job.py").write_text(
        textwrap.dedent(
            f"""
            from zenml import pipeline
            from zenml_model_deployers.steps import batch_inference_step, mlflow_deployer_step

            @pipeline(enable_cache=False)
            def interrupted_batch() -> None:
                svc = mlflow_deployer_step(model_uri={data["lr"]!r}, deployment_name={DEPLOYMENT!r})
                batch_inference_step(svc, data={str(data["root"] / "clean")!r}, concurrency=1, **{args!r})

            interrupted_batch()
            """
        )
    )
    said, committed = _interrupt_after_commits(
        tmp_path / "pipeline_job.py", out / "_zmd_commits", started_in_background=True
    )
    assert "Backend said" not in said, said
    assert "BatchInterruptedError: Batch job " in said, said
    assert (
        f"was interrupted: {committed} of 30 chunks ({committed * 200} of {ROWS} rows) are " in said
    )
    assert "run the same job again" in said and "it resumes" in said

    _, report = run_batch(str(data["root"] / "clean"), scorer, progress=False, **args)  # type: ignore[arg-type]
    assert report.chunks_skipped == committed and report.rows_predicted == ROWS - committed * 200
    parts = read_parts(out)
    assert len(parts) == ROWS and parts["prediction"].tolist() == data["expected"]


def test_job_memory_is_bounded_by_its_chunks_not_by_its_input(tmp_path: Path) -> None:
    """Out of core: a 176 MiB input (360k rows x 64 float64, 5k-row row groups) scored in
    5k-row chunks in a fresh process raises its RSS (sampled every 2 ms, after a warm-up on
    two of its files) by well under half the input: a constant, not the input (local=True
    predicts chunks in groups of up to 8 MiB of input, reads up to 4 MiB ahead in a thread,
    plus the DataFrame and the model's own copy: 3-45 MiB measured, depending on how the
    allocator reuses the reading thread's freed buffers); reading the input whole afterwards,
    measured the same way, raises it by over the input."""
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression

    cols, rows, files = [f"w{i}" for i in range(64)], 360_000, 12
    rng = np.random.default_rng(3)
    x = pd.DataFrame(rng.normal(size=(2000, len(cols))), columns=cols)
    model = LogisticRegression().fit(x, (x["w0"] > 0).astype(int))
    mlflow.sklearn.save_model(model, str(tmp_path / "wide"), serialization_format="pickle")
    (tmp_path / "in").mkdir()
    (tmp_path / "small").mkdir()
    for i in range(files):
        part = pd.DataFrame(rng.normal(size=(rows // files, len(cols))), columns=cols)
        part.to_parquet(tmp_path / "in" / f"p{i:02d}.parquet", row_group_size=5_000)
        if i < 2:  # the warm-up's input: two of the files
            shutil.copy(tmp_path / "in" / f"p{i:02d}.parquet", tmp_path / "small")
    input_mib = rows * len(cols) * 8 / 2**20
    script = textwrap.dedent(
        f"""
        import json, threading
        import psutil
        from zenml_model_deployers.batch import run_batch
        me, peak, stop = psutil.Process(), [0], threading.Event()
        def grown(fn):  # the RSS reached while fn runs, above the RSS before it (MiB)
            before = peak[0] = me.memory_info().rss
            def watch():
                while not stop.wait(0.002):
                    peak[0] = max(peak[0], me.memory_info().rss)
            stop.clear()
            watcher = threading.Thread(target=watch)
            watcher.start()
            try:
                out = fn()
            finally:
                stop.set()
                watcher.join()
            return out, (peak[0] - before) / 2**20
        def job(data, out):
            return run_batch(data, local=True, model_uri={str(tmp_path / "wide")!r},
                             output_uri=out, chunk_rows=5_000, progress=False)[1]
        # Warm-up on two files: imports, the model, threads and memory pools.
        job({str(tmp_path / "small")!r}, {str(tmp_path / "warm")!r})
        report, chunks = grown(lambda: job({str(tmp_path / "in")!r}, {str(tmp_path / "out")!r}))
        # What the job must not do, measured the same way: the input in memory at once.
        import pandas as pd
        _, whole = grown(lambda: pd.read_parquet({str(tmp_path / "in")!r}))
        print(json.dumps({{"chunks": chunks, "whole": whole, "rows": report.rows_predicted}}))
        """
    )
    (tmp_path / "job.py").write_text(script)
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "job.py")],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    grown = json.loads(proc.stdout.strip().splitlines()[-1])
    assert grown["rows"] == rows
    # 3-45 MiB (the constant above); loading the whole input adds over 350 MiB.
    assert grown["chunks"] < input_mib * 0.5, grown
    assert grown["whole"] > 0.8 * input_mib, grown  # the measure sees a whole-input load
    assert len(pd.read_parquet(tmp_path / "out", columns=["prediction"])) == rows


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A local Ray on 2 CPUs, started once for this module and shut down after it."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield
    finally:
        ray.shutdown()


def test_ray_engine_gives_the_same_output_and_the_same_exactly_once_guarantees(
    local_ray: None,
    scorer: Any,
    faulty: tuple[Any, _Faults],
    data: dict[str, Any],
    tmp_path: Path,
) -> None:
    """Workers read their chunks, predict and commit the Parquet parts themselves; a refused
    chunk names its rows; every chunk a worker finished is committed and reported, none is
    half-written, and a re-run writes each missing chunk once."""
    kw: dict[str, Any] = dict(
        columns=["f1", "f2"], chunk_rows=1500, batch_size=500, concurrency=2, progress=False
    )
    clean, dirty = str(data["root"] / "clean"), str(data["root"] / "dirty")
    # map_batches against the deployment (the model loaded in the workers: the resume below).
    seen: list[Any] = []
    _, remote = run_batch(
        clean, scorer, engine="ray", output_uri=str(tmp_path / "r"), on_chunk=seen.append, **kw
    )
    assert (remote.engine, remote.rows_predicted) == ("ray", ROWS)
    assert read_parts(tmp_path / "r")["prediction"].tolist() == data["expected"]
    assert sorted(r.chunk for r in seen) == [0, 1, 2, 3]  # reported as workers commit
    assert {r.predicted_by for r in seen} == {remote.predicted_by}

    # A chunk whose request is refused: its rows and the model's words. Chunks run in any
    # order: the ones workers finished are committed (and reported), the failed one is not.
    out, seen = tmp_path / "d", []
    with pytest.raises(PredictionError) as err:
        run_batch(dirty, scorer, engine="ray", output_uri=str(out), on_chunk=seen.append, **kw)
    assert "rows 4000-4499" in str(err.value) and "NaN" in str(err.value)
    done = sorted(int(p.stem) for p in (out / "_zmd_commits").glob("*.json"))
    assert 2 not in done and done == sorted(r.chunk for r in seen)
    assert {0, 1} <= set(done)  # both started before chunk 2 (2 in flight); they finish whole
    assert sorted(p.name for p in out.iterdir()) == [  # nothing half-made, no run folder left
        "_zmd_commits",
        "_zmd_job.json",
        *(f"part-{i:06d}.parquet" for i in done),
    ]
    for i in done:
        part = pd.read_parquet(out / f"part-{i:06d}.parquet")
        assert part["prediction"].tolist() == data["expected"][i * 1500 : (i + 1) * 1500]
    _, resumed = run_batch(
        dirty, engine="ray", local=True, model_uri=data["imputing"], output_uri=str(out), **kw
    )
    assert (resumed.chunks_skipped, resumed.rows_predicted) == (len(done), ROWS - 1500 * len(done))
    assert read_parts(out)["prediction"].tolist()[:3000] == data["expected"][:3000]
    assert len(read_parts(out)) == ROWS

    # A database output: workers return Arrow tables and the driver writes (the URL stays
    # here); an in-memory input is sliced by the driver; the result equals the threads engine.
    db = tmp_path / "scores.db"
    frame = data["frame"].iloc[:2000][["f1", "f2"]]
    kw_mem = {**kw, "chunk_rows": 700, "columns": None}
    _, rep = run_batch(frame, scorer, engine="ray", database_url=f"sqlite:///{db}", **kw_mem)
    assert table_rows(db)["prediction"].tolist() == data["expected"][:2000] and rep.chunks == 3
    with pytest.raises(PredictionError, match="rows 4000-4499"):  # the driver stops the rest
        run_batch(dirty, scorer, engine="ray", database_url=f"sqlite:///{db}", table="d", **kw)
    with sqlite3.connect(db) as con:
        (commits,) = con.execute("select count(*) from zmd_batch_commits where target_table='d'")
    assert len(table_rows(db, "d")) == 1500 * commits[0] < ROWS  # whole chunks only
    on_ray, _ = run_batch(frame, engine="ray", local=True, model_uri=data["lr"], **kw_mem)
    on_threads, _ = run_batch(frame, local=True, model_uri=data["lr"], **kw_mem)
    pd.testing.assert_frame_equal(on_ray, on_threads)

    # Transient failures are retried in the workers, and the report counts them.
    svc, faults = faulty
    faults.plan = ["503", "reset"]
    fast = RetryPolicy(attempts=4, backoff=0.01)
    got, rep = run_batch(frame, svc, engine="ray", retry=fast, **{**kw_mem, "batch_size": 350})
    assert got["prediction"].tolist() == data["expected"][:2000]
    assert rep.retries == 2 and faults.requests == 6 + 2

    # After a refused chunk no new chunk is predicted: the chunks running finish, the others
    # see the run's stop file (bounded work, not the remaining 39 chunks' requests).
    faults.plan, faults.requests, small = ["500"], 0, {**kw_mem, "chunk_rows": 50}
    with pytest.raises(PredictionError, match="planted 500"):
        run_batch(frame, svc, engine="ray", output_uri=str(tmp_path / "f"), **small)
    assert faults.requests <= 12


def test_ray_workers_read_and_write_s3_through_the_stacks_artifact_store(
    local_ray: None, s3_bucket: Any, data: dict[str, Any]
) -> None:
    """Fresh Ray workers have no `s3://` filesystem: they build the driver's artifact store
    from its component (its credentials in its configuration, not in the workers' env), then
    read their chunks from and commit their parts to the bucket."""
    from zenml.client import Client
    from zenml.enums import StackComponentType

    s3, store = s3_bucket
    for i, name in enumerate(sorted((data["root"] / "clean").iterdir())):
        s3.put_object(Bucket="zmd-batch", Key=f"ray-in/p{i}.parquet", Body=name.read_bytes())
    client = Client()
    previous = client.active_stack_model
    component = client.create_stack_component(
        name="zmd-batch-s3-keys",
        flavor="s3",
        component_type=StackComponentType.ARTIFACT_STORE,
        configuration={
            **store.config.model_dump(exclude_none=True),
            "key": "moto",
            "secret": "moto",
        },
    )
    orchestrator = previous.components[StackComponentType.ORCHESTRATOR][0].id
    stack = client.create_stack(
        name="zmd-batch-s3",
        components={
            StackComponentType.ORCHESTRATOR: str(orchestrator),
            StackComponentType.ARTIFACT_STORE: str(component.id),
        },
    )
    client.activate_stack(stack.id)
    try:
        _, report = run_batch(
            "s3://zmd-batch/ray-in",
            engine="ray",
            local=True,
            model_uri=data["lr"],
            columns=["f1", "f2"],
            output_uri="s3://zmd-batch/ray",
            chunk_rows=2000,
            concurrency=1,
            progress=False,
        )
    finally:
        client.activate_stack(previous.id)
        client.delete_stack(stack.id)
        client.delete_stack_component(component.id, StackComponentType.ARTIFACT_STORE)
    assert (report.engine, report.rows_predicted) == ("ray", ROWS)
    assert_s3_output(s3, "ray", 3, data["expected"])


def test_refused_batch_names_its_rows_and_the_fixed_model_resumes_the_job(
    scorer: Any, data: dict[str, Any], tmp_path: Path
) -> None:
    """The nightly story: one bad row stops the job with the model's words and the row range;
    the team scores the rest with a model that imputes (here in-process, `local=True`) by
    running the same job, which finishes where it stopped."""
    out, db = tmp_path / "out", tmp_path / "scores.db"
    kw: dict[str, Any] = dict(
        output_uri=str(out),
        database_url=f"sqlite:///{db}",
        columns=["f1", "f2"],
        chunk_rows=1000,
        batch_size=100,
        concurrency=2,
        progress=False,
    )
    dirty = str(data["root"] / "dirty")
    with pytest.raises(PredictionError) as err:
        run_batch(dirty, scorer, **kw)
    text = str(err.value)
    assert text.startswith("Batch inference failed at rows 4300-4399 (chunk 4 of 6")
    assert "NaN" in text  # the model's own words, via the server's error body
    assert err.value.status_code == 400
    assert len(table_rows(db)) == 4000
    assert len(list((out / "_zmd_commits").glob("*.json"))) == 4

    _, report = run_batch(dirty, local=True, model_uri=data["imputing"], **kw)
    assert (report.chunks_skipped, report.rows_predicted) == (4, 2000)
    assert len(table_rows(db)) == ROWS and len(read_parts(out)) == ROWS
    assert read_parts(out)["prediction"].tolist()[:4000] == data["expected"][:4000]
    records = [json.loads(p.read_text()) for p in sorted((out / "_zmd_commits").glob("*.json"))]
    served = {r["predicted_by"] for r in records[:4]}
    assert len(served) == 1 and served.pop().startswith(f"deployment {DEPLOYMENT} (")
    assert {r["predicted_by"] for r in records[4:]} == {f"local model {data['imputing']}"}


def test_two_runs_of_one_job_cannot_both_commit_a_chunk_to_a_table(tmp_path: Path) -> None:
    """The commit row is the chunk's key: a second writer's transaction is rolled back whole."""
    import pyarrow as pa

    from zenml_model_deployers.batch.sinks import CommitRecord, JobManifest, SqlSink

    job = JobManifest(job_id="j1", source="in-memory", chunk_rows=3, total_rows=3, chunks=1)
    rows = pa.table({"id": [0, 1, 2], "prediction": [1, 0, 1]})
    record = CommitRecord(
        chunk=0, first_row=0, last_row=2, rows=3, predicted_by="x", committed_at="now"
    )
    first, second = (SqlSink(f"sqlite:///{tmp_path / 'db.sqlite'}", "scores") for _ in range(2))
    try:
        assert first.start(job) == set() and second.start(job) == set()  # both began before
        first.write(rows, record)
        with pytest.raises(PredictionError, match="nothing of them was written") as err:
            second.write(rows, record)
        assert "UNIQUE" in str(err.value)  # the database's words
    finally:
        first.close()
        second.close()
    assert len(table_rows(tmp_path / "db.sqlite", "scores")) == 3


def test_default_chunks_hold_whole_requests_in_the_step_and_the_job() -> None:
    """The defaults the bench chose: zmd-mlflow gets requests of 8192 rows, a flavor that sets
    none (an LLM endpoint, a hosted one) 256; chunks hold whole requests of either (no short
    request at each chunk's end); the same in `run_batch` and `batch_inference_step`."""
    import inspect

    from steps.predict import batch_inference_step
    from zenml_model_deployers.batch import runner
    from zenml_model_deployers.flavors.huggingface.service import HuggingFaceDeploymentService
    from zenml_model_deployers.flavors.mlflow.service import MLflowDeploymentService
    from zenml_model_deployers.flavors.vllm.service import VLLMDeploymentService

    job = inspect.signature(run_batch).parameters
    step = inspect.signature(batch_inference_step.entrypoint).parameters
    for params in (job, step):
        assert params["batch_size"].default is None  # the service's own
        assert params["chunk_rows"].default == runner.DEFAULT_CHUNK_ROWS
    assert MLflowDeploymentService.BATCH_SIZE == runner.DEFAULT_BATCH_SIZE == 8192
    assert HuggingFaceDeploymentService.BATCH_SIZE == VLLMDeploymentService.BATCH_SIZE == 256
    assert runner.default_batch_size(None) == 8192  # local=True: no server to protect
    for cls in (MLflowDeploymentService, HuggingFaceDeploymentService):
        assert runner.DEFAULT_CHUNK_ROWS % cls.BATCH_SIZE == 0
    service = HuggingFaceDeploymentService.model_construct()
    assert runner.default_batch_size(service) == 256


def test_read_ahead_raises_a_reading_error_in_order_and_stops_when_closed() -> None:
    """The chunks read before a failure come first, then the reading error itself; a consumer
    that stops early closes the reader, which stops reading (bounded) and ends its thread."""
    from zenml_model_deployers.batch.sources import Chunk, ReadAhead

    def failing() -> Iterator[Chunk]:
        yield Chunk(0, 0, pa.table({"x": [1, 2]}))
        raise ConfigurationError("Could not read the Parquet footer of batch input 'p1'.")

    seen = []
    with pytest.raises(ConfigurationError, match="p1"):
        for chunk in ReadAhead(failing(), max_bytes=0):
            seen.append(chunk.index)
    assert seen == [0]

    produced = []

    def endless() -> Iterator[Chunk]:
        for i in range(10**6):
            produced.append(i)
            yield Chunk(i, i, pa.table({"x": [i] * 100}))

    ahead = ReadAhead(endless(), max_bytes=2000)
    first = next(iter(ahead))
    ahead.close()
    assert first.index == 0 and not ahead._thread.is_alive()
    assert len(produced) < 10  # about max_bytes ahead, then stopped

"""Batch inference at scale: the batch job's rows/s and memory against what bounds them.

One `zmd-mlflow` deployment of a small tabular model (logistic regression, 4 features). In the
same run:

- naive: one request per row (``service.predict`` of a one-row DataFrame, sequential);
- the server's best: raw kept-alive POSTs of pre-encoded bodies (``dataframe_split``) from a
  thread pool, for several batch sizes and concurrencies; the best rows/s and where it was;
- the batch job (``run_batch``, what ``batch_inference_step`` runs): a 100k-row Parquet dataset
  read in chunks, predicted at that best batch size and concurrency, written as Parquet parts;
  interleaved with the server's best, 3 rounds, medians;
- peak RSS of the job (a fresh process each) for 1M rows vs 100k rows;
- ``local=True`` (model in-process) vs a bare ``model.predict`` on the same in-memory frame;
- ``engine="ray"`` (a local Ray on 2 CPUs, started before timing) vs the default engine.

``ZMD_BENCH_BATCH_ONLY=ray`` runs only a Ray section (``run_ray``): Ray vs threads against the
deployment and with ``local=True``; with another checkout's ``src`` first on ``PYTHONPATH`` it
measures that code the same way (docs/benchmarks.md: main vs the branch, alternated).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as c  # noqa: E402

ROWS = 100_000
BIG = 1_000_000
ROUNDS = 3
NAIVE_ROWS = 300
SIZES = (1024, 4096, 8192, 16384)
# What MLflow's scoring server takes: pandas' `dataframe_split` JSON, and Parquet (MLflow 3).
FORMATS = ("json", "parquet")
PARQUET_HEADERS = {"Content-Type": "application/vnd.apache.parquet"}
# The out-of-core check: rows wide enough that 1M of them are hundreds of MiB in memory.
WIDE = 48
CONCURRENCIES = (1, 2, 4)
FEATURES = ["f1", "f2", "f3", "f4"]
TIMEOUT = 120


def _frame(n: int, seed: int = 0, features: list[str] = FEATURES) -> Any:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    return pd.DataFrame({f: rng.normal(size=n) for f in features})


def _wide_features() -> list[str]:
    return [f"f{i}" for i in range(1, WIDE + 1)]


def _model(out: Path, features: list[str] = FEATURES) -> str:
    import logging

    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression

    logging.getLogger("mlflow.sklearn").setLevel(logging.ERROR)
    x = _frame(2000, seed=1, features=features)
    y = (x["f1"] + x["f2"] - x["f3"] > 0).astype(int)
    mlflow.sklearn.save_model(
        LogisticRegression().fit(x, y), str(out), serialization_format="pickle"
    )
    return str(out)


def _write_parquet(frame: Any, folder: Path, files: int) -> str:
    folder.mkdir(parents=True)
    step = -(-len(frame) // files)
    for i in range(files):
        frame.iloc[i * step : (i + 1) * step].to_parquet(folder / f"part-{i:03d}.parquet")
    return str(folder)


def _write_wide(rows: int, folder: Path, files: int) -> tuple[str, float]:
    """A wide dataset written file by file (never whole in this process); (path, MiB in
    memory as float64)."""
    folder.mkdir(parents=True)
    step = rows // files
    for i in range(files):
        _frame(step, seed=10 + i, features=_wide_features()).to_parquet(
            folder / f"part-{i:03d}.parquet"
        )
    return str(folder), rows * WIDE * 8 / 2**20


def _bodies(frame: Any, size: int, fmt: str) -> list[bytes]:
    """Pre-encoded bodies of ``size`` rows (what the server's rate gets): ``dataframe_split``
    JSON, or Parquet."""
    import io

    def parquet(part: Any) -> bytes:
        buf = io.BytesIO()
        part.to_parquet(buf, index=False, compression=None)
        return buf.getvalue()

    parts = [frame.iloc[i : i + size] for i in range(0, len(frame), size)]
    if fmt == "parquet":
        return [parquet(p) for p in parts]
    return [
        b'{"dataframe_split": ' + p.to_json(orient="split", index=False).encode() + b"}"
        for p in parts
    ]


def _post_all(url: str, bodies: list[bytes], concurrency: int, fmt: str) -> float:
    """Seconds to POST every body on kept-alive sessions, ``concurrency`` at a time."""
    import requests

    sessions = [requests.Session() for _ in range(concurrency)]
    headers = PARQUET_HEADERS if fmt == "parquet" else c.JSON_HEADERS

    def post(i: int) -> None:
        r = sessions[i % concurrency].post(url, data=bodies[i], headers=headers, timeout=60)
        assert r.status_code == 200, r.text[:200]

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(post, range(len(bodies))))
    return time.perf_counter() - t0


def _server_rate(url: str, frame: Any, size: int, concurrency: int, fmt: str) -> float:
    """Rows/s of raw kept-alive POSTs of pre-encoded batches (the server's own rate)."""
    return len(frame) / _post_all(url, _bodies(frame, size, fmt), concurrency, fmt)


def _serving_cpu(root: Path) -> float:
    """CPU seconds used so far by the deployment's processes (relay, mlflow, uvicorn)."""
    import psutil

    marker, total = str(root), 0.0
    for p in psutil.process_iter(["pid", "cmdline"]):
        if p.pid == os.getpid():
            continue
        try:
            mine = marker in " ".join(p.info["cmdline"] or []) or p.environ().get(
                "ZENML_CONFIG_PATH", ""
            ).startswith(marker)
            if mine:
                t = p.cpu_times()
                total += t.user + t.system
        except psutil.Error:
            continue
    return total


def _cpu_per_row(fn: Any, rows: int, root: Path) -> tuple[Any, float, float]:
    """Runs fn; returns (its result, client and serving CPU microseconds per row)."""
    client0, serving0 = time.process_time(), _serving_cpu(root)
    out = fn()
    client = (time.process_time() - client0) / rows * 1e6
    serving = (_serving_cpu(root) - serving0) / rows * 1e6
    return out, client, serving


def _rss_child(spec_path: str) -> None:
    """In a fresh process: run the job described in the JSON file; print peak RSS (MiB)."""
    import resource

    spec = json.loads(Path(spec_path).read_text())
    from zenml_model_deployers.batch import run_batch
    from zenml_model_deployers.service import load_service_class

    svc = load_service_class(spec["service_class"]).model_validate(spec["service"])
    import psutil

    base = psutil.Process().memory_info().rss / 1024  # KiB, as ru_maxrss on Linux
    _, report = run_batch(
        spec["data"],
        svc,
        output_uri=spec["out"],
        batch_size=spec["batch_size"],
        concurrency=spec["concurrency"],
        progress=False,
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_mib": peak / 1024, "before_mib": base / 1024, "rows": report.rows}))


def _peak_rss(svc: Any, data: str, out: Path, size: int, conc: int) -> dict[str, Any]:
    spec = out.with_suffix(".json")
    spec.write_text(
        json.dumps(
            {
                "service_class": f"{type(svc).__module__}.{type(svc).__qualname__}",
                "service": svc.model_dump(mode="json"),
                "data": data,
                "out": str(out),
                "batch_size": size,
                "concurrency": conc,
            }
        )
    )
    proc = subprocess.run(
        [c.PYTHON, __file__, "--rss-child", str(spec)],
        capture_output=True,
        text=True,
        timeout=400,
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def run() -> dict[str, Any]:
    """Runs the benchmark (inside an isolated env) and returns its result."""
    root = c.isolated_env("batch")
    c.zmd_stack()
    import mlflow.pyfunc
    import pandas as pd

    from zenml_model_deployers.batch import run_batch
    from zenml_model_deployers.batch.runner import DEFAULT_BATCH_SIZE, DEFAULT_CHUNK_ROWS
    from zenml_model_deployers.flavors import get_deployer
    from zenml_model_deployers.flavors.mlflow.config import MLflowDeploymentConfig

    load = os.getloadavg()
    model_uri = _model(root / "model")
    frame = _frame(ROWS)
    # Rates are measured on 1M rows: at ~1M rows/s, 100k rows are mostly a job's fixed costs.
    big_frame = _frame(BIG, seed=2)
    big = _write_parquet(big_frame, root / "data-1m", 10)
    d = get_deployer("zmd-mlflow")
    svc = d.deploy(
        MLflowDeploymentConfig(deployment_name="bench-batch", model_uri=model_uri),
        timeout=TIMEOUT,
    )
    notes: list[str] = []  # what the numbers mean is written with them in docs/benchmarks.md
    try:
        url = svc.prediction_url
        # Naive: one request per row.
        naive = []
        for r in range(ROUNDS):
            rows = frame.iloc[r * NAIVE_ROWS : (r + 1) * NAIVE_ROWS]
            t0 = time.perf_counter()
            for i in range(len(rows)):
                svc.predict(rows.iloc[i : i + 1])
            naive.append(len(rows) / (time.perf_counter() - t0))
        # The server's best format, batch size and concurrency (20k-row sample, 2 passes each).
        sample = frame.iloc[:20_000]
        grid = {
            (f, s, k): c.median([_server_rate(url, sample, s, k, f) for _ in range(2)])
            for f in FORMATS
            for s in SIZES
            for k in CONCURRENCIES
        }
        best_fmt, best_size, best_conc = max(grid, key=lambda key: grid[key])
        json_best = max((key for key in grid if key[0] == "json"), key=lambda key: grid[key])
        # The job's own best concurrency at that batch size (one run each; it also encodes
        # the requests, which the pre-encoded raw POSTs do not).
        # Chunks of whole requests: 4 x the batch size (at 50k rows and 16,384-row requests
        # each chunk ends with an 848-row request, its per-request cost for few rows).
        chunk = 4 * best_size
        job_grid = {}
        for k in CONCURRENCIES:
            _, rep = run_batch(
                big,
                svc,
                output_uri=str(root / f"grid-{k}"),
                chunk_rows=chunk,
                batch_size=best_size,
                concurrency=k,
                progress=False,
            )
            job_grid[k] = rep.rows_per_second
        job_conc = max(job_grid, key=lambda k: job_grid[k])
        # Interleaved: the server's best vs the batch job on 1M rows.
        server, server_json, job, job_50k, job_default = [], [], [], [], []
        cpu: dict[str, list[tuple[float, float]]] = {"raw": [], "job": []}
        for r in range(ROUNDS):
            bodies = _bodies(big_frame, best_size, best_fmt)  # encoding is not the server's time
            seconds, *raw_cpu = _cpu_per_row(
                lambda b=bodies: _post_all(url, b, best_conc, best_fmt), BIG, root
            )
            server.append(BIG / seconds)
            cpu["raw"].append((raw_cpu[0], raw_cpu[1]))
            _, js, jk = json_best
            server_json.append(BIG / _post_all(url, _bodies(big_frame, js, "json"), jk, "json"))
            (_, rep), *job_cpu = _cpu_per_row(
                lambda r=r: run_batch(
                    big,
                    svc,
                    output_uri=str(root / f"out-{r}"),
                    chunk_rows=chunk,
                    batch_size=best_size,
                    concurrency=job_conc,
                    progress=False,
                ),
                BIG,
                root,
            )
            cpu["job"].append((job_cpu[0], job_cpu[1]))
            job.append(rep.rows_per_second)
            _, rep = run_batch(
                big,
                svc,
                output_uri=str(root / f"out-50k-{r}"),
                batch_size=best_size,
                concurrency=job_conc,
                progress=False,
            )
            job_50k.append(rep.rows_per_second)
            _, rep = run_batch(big, svc, output_uri=str(root / f"out-def-{r}"), progress=False)
            job_default.append(rep.rows_per_second)
        # Peak RSS, 1M rows vs 100k rows of a wide model (48 float64 features: 1M rows are
        # hundreds of MiB in memory), a fresh process each, against its own deployment.
        wide_svc = d.deploy(
            MLflowDeploymentConfig(
                deployment_name="bench-batch-wide",
                model_uri=_model(root / "model-wide", _wide_features()),
            ),
            timeout=TIMEOUT,
        )
        try:
            # The same layout for both (50k-row files): only the number of rows differs.
            small_data, small_mib = _write_wide(ROWS, root / "wide-100k", ROWS // 50_000)
            big_data, big_mib = _write_wide(BIG, root / "wide-1m", BIG // 50_000)
            rss_small = _peak_rss(wide_svc, small_data, root / "rss-100k", best_size, job_conc)
            rss_big = _peak_rss(wide_svc, big_data, root / "rss-1m", best_size, job_conc)
        finally:
            d.delete(wide_svc)
        # local=True vs bare model.predict on the same data, interleaved: the Parquet dataset
        # (bare: pd.read_parquet + predict; ours: the job, predictions returned in memory),
        # and an in-memory frame (bare: predict alone).
        # The job loads the model (once per job), so the bare script does too; a bare predict
        # on a model loaded before timing is reported next to it.
        model = mlflow.pyfunc.load_model(model_uri)
        bare, bare_loaded, local, bare_mem, local_mem = [], [], [], [], []
        for _ in range(ROUNDS + 2):
            t0 = time.perf_counter()
            preds = mlflow.pyfunc.load_model(model_uri).predict(pd.read_parquet(big))
            bare.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            model.predict(pd.read_parquet(big))
            bare_loaded.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            out, _ = run_batch(big, local=True, model_uri=model_uri, progress=False)
            local.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            model.predict(frame)
            bare_mem.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            run_batch(frame, local=True, model_uri=model_uri, progress=False)
            local_mem.append(time.perf_counter() - t0)
        assert out["prediction"].tolist() == list(preds)
        # Ray vs the default engine against the deployment (Ray started before timing).
        import ray

        t0 = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        ray_start = time.perf_counter() - t0
        try:
            on_ray, on_threads = [], []
            for r in range(ROUNDS):
                _, rep = run_batch(
                    big,
                    svc,
                    engine="ray",
                    output_uri=str(root / f"ray-{r}"),
                    batch_size=best_size,
                    concurrency=2,
                    progress=False,
                )
                on_ray.append(rep.rows_per_second)
                _, rep = run_batch(
                    big,
                    svc,
                    output_uri=str(root / f"thr-{r}"),
                    batch_size=best_size,
                    concurrency=job_conc,
                    progress=False,
                )
                on_threads.append(rep.rows_per_second)
            same = pd.read_parquet(root / "ray-0").equals(pd.read_parquet(root / "thr-0"))
        finally:
            ray.shutdown()
    finally:
        d.delete(svc)

    m_naive, m_server, m_job = c.median(naive), c.median(server), c.median(job)
    m_server_json = c.median(server_json)
    m_def, m_50k = c.median(job_default), c.median(job_50k)
    vs_naive, vs_server = m_job / m_naive, m_job / m_server
    rss_ratio = rss_big["peak_mib"] / rss_small["peak_mib"]
    local_ratio = c.median(local) / c.median(bare)
    m_ray, m_thr = c.median(on_ray), c.median(on_threads)
    load_after = os.getloadavg()
    best = (best_fmt, best_size, best_conc)
    grid_rows = [
        [f, s, k, f"{grid[(f, s, k)]:,.0f}" + (" (best)" if (f, s, k) == best else "")]
        for f in FORMATS
        for s in SIZES
        for k in CONCURRENCIES
    ]
    return {
        "name": "batch",
        "title": "Batch inference: rows/s and memory",
        "method": (
            "A logistic regression on 4 features served by `zmd-mlflow`; a Parquet dataset of "
            f"1M rows (10 files). Naive: {NAIVE_ROWS} sequential "
            "one-row `service.predict` calls per round. Server's best: raw kept-alive POSTs of "
            "pre-encoded bodies (`dataframe_split` JSON or Parquet, both of which MLflow's "
            "server takes) from a thread pool; the grid below on 20k rows picks the format, "
            "batch size and concurrency, then 1M rows per round (and the best JSON one, as "
            "before). The job: `run_batch` (what `batch_inference_step` runs; it sends Parquet "
            "bodies to MLflow) reading the 1M-row Parquet in chunks of 4 requests (and of the "
            f"default {DEFAULT_CHUNK_ROWS:,} rows) and writing Parquet parts, at the server's best batch size and the job's best concurrency there (it "
            "encodes its requests; the raw POSTs do not; its rows/s include its start and "
            f"listing), and at its defaults ({DEFAULT_BATCH_SIZE} rows per request, 4 in flight, "
            f"chunks of {DEFAULT_CHUNK_ROWS:,}). "
            f"{ROUNDS} rounds, interleaved; medians. Peak RSS: a fresh process per size "
            "(ru_maxrss, includes the interpreter and imports), a second deployment of a model "
            f"on {WIDE} float64 features, 50k-row files for both sizes, so that 1M input rows "
            f"are {BIG * WIDE * 8 / 2**20:.0f} MiB in memory. local=True: `run_batch` on the 1M-row "
            "Parquet dataset (it loads the model) vs `mlflow.pyfunc.load_model(...)"
            ".predict(pd.read_parquet(...))`, and both on an in-memory 100k-row frame (bare: a "
            "model loaded before timing). Ray (1M rows): "
            "a local Ray (num_cpus=2) started before timing, map_batches against the "
            f"deployment with 2 tasks in flight. Load average (1, 5, 15 min) before: "
            f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; after: {load_after[0]:.1f} "
            f"{load_after[1]:.1f} {load_after[2]:.1f}."
        ),
        "tables": [
            {
                "caption": "Rows per second (medians)",
                "headers": ["client", "rows/s", "ratio to the job"],
                "rows": [
                    ["naive: one request per row", f"{m_naive:,.0f}", c.fmt_ratio(m_naive / m_job)],
                    [
                        f"server's best: raw POSTs, {best_fmt}, {best_size} rows x "
                        f"{best_conc} in flight",
                        f"{m_server:,.0f}",
                        c.fmt_ratio(m_server / m_job),
                    ],
                    [
                        f"server's best with JSON: raw POSTs, {json_best[1]} rows x "
                        f"{json_best[2]} in flight",
                        f"{m_server_json:,.0f}",
                        c.fmt_ratio(m_server_json / m_job),
                    ],
                    [
                        f"the job, {best_size} rows x {job_conc} in flight, chunks of {chunk:,} "
                        "(Parquet in and out)",
                        f"{m_job:,.0f}",
                        "1.00x",
                    ],
                    [
                        f"the same at the default {DEFAULT_CHUNK_ROWS:,}-row chunks",
                        f"{m_50k:,.0f}",
                        c.fmt_ratio(m_50k / m_job),
                    ],
                    [
                        f"the job at its defaults ({DEFAULT_BATCH_SIZE} rows x 4, chunks of "
                        f"{DEFAULT_CHUNK_ROWS:,})",
                        f"{m_def:,.0f}",
                        c.fmt_ratio(m_def / m_job),
                    ],
                    [
                        'the job, engine="ray" (2 tasks)',
                        f"{m_ray:,.0f}",
                        c.fmt_ratio(m_ray / m_job),
                    ],
                    [
                        "the job, threads (same round as ray)",
                        f"{m_thr:,.0f}",
                        c.fmt_ratio(m_thr / m_job),
                    ],
                ],
            },
            {
                "caption": "The server's rate by body format, batch size and concurrency "
                "(20k rows each)",
                "headers": ["body", "rows per request", "in flight", "rows/s"],
                "rows": grid_rows,
            },
            {
                "caption": "CPU per row, same rounds (client: this process, all threads; "
                "serving: relay + mlflow + uvicorn), medians",
                "headers": ["client", "client CPU / row", "serving CPU / row"],
                "rows": [
                    [
                        name,
                        f"{c.median(x for x, _ in cpu[key]):.1f} µs",
                        f"{c.median(y for _, y in cpu[key]):.1f} µs",
                    ]
                    for name, key in (
                        ("raw POSTs of pre-encoded bodies (encoding not counted)", "raw"),
                        ("the job (reads Parquet, encodes, parses, writes Parquet)", "job"),
                    )
                ],
            },
            {
                "caption": f"The job's rate by concurrency at {best_size} rows per request (one run each)",
                "headers": ["in flight", "rows/s"],
                "rows": [[k, f"{v:,.0f}"] for k, v in job_grid.items()],
            },
            {
                "caption": "Peak RSS of the job process and local=True",
                "headers": ["measure", "value"],
                "rows": [
                    [
                        f"input in memory (float64), 100k / 1M rows x {WIDE}",
                        f"{small_mib:.0f} MiB / {big_mib:.0f} MiB",
                    ],
                    ["peak RSS, 100k rows", f"{rss_small['peak_mib']:.0f} MiB"],
                    ["peak RSS, 1M rows", f"{rss_big['peak_mib']:.0f} MiB"],
                    ["ratio 1M / 100k", c.fmt_ratio(rss_ratio)],
                    [
                        "peak minus the RSS before the job (pandas and pyarrow are imported by the job), 100k / 1M",
                        f"{rss_small['peak_mib'] - rss_small['before_mib']:.0f} MiB / "
                        f"{rss_big['peak_mib'] - rss_big['before_mib']:.0f} MiB",
                    ],
                    [
                        "bare `load_model` + `pd.read_parquet` + `predict`, 1M rows",
                        c.fmt_ms(c.median(bare)),
                    ],
                    [
                        "bare `pd.read_parquet` + `predict` (model loaded before timing)",
                        c.fmt_ms(c.median(bare_loaded)),
                    ],
                    ["`run_batch(local=True)` on the same Parquet", c.fmt_ms(c.median(local))],
                    [
                        "bare `model.predict`, in-memory 100k-row frame",
                        c.fmt_ms(c.median(bare_mem)),
                    ],
                    ["`run_batch(local=True)`, same frame", c.fmt_ms(c.median(local_mem))],
                    [
                        "ratio in memory (ours loads the model; the bare call does not)",
                        c.fmt_ratio(c.median(local_mem) / c.median(bare_mem)),
                    ],
                    ["Ray start (once, not in the rates)", c.fmt_s(ray_start)],
                ],
            },
        ],
        "goals": [
            {
                "goal": "job >= 50x naive one-row loop",
                "value": c.fmt_ratio(vs_naive),
                "met": vs_naive >= 50,
            },
            {
                "goal": "job >= 0.8x the server's best rate at its best batch size",
                "value": c.fmt_ratio(vs_server),
                "met": vs_server >= 0.8,
            },
            {
                "goal": "peak RSS for 1M rows <= 1.2x that for 100k rows",
                "value": c.fmt_ratio(rss_ratio),
                "met": rss_ratio <= 1.2,
            },
            {
                "goal": "local=True <= 1.5x bare model.predict (same Parquet data)",
                "value": c.fmt_ratio(local_ratio),
                "met": local_ratio <= 1.5,
            },
            {
                "goal": 'engine="ray": same output as the default engine',
                "value": f"{'same' if same else 'DIFFERENT'}; ray/threads {c.fmt_ratio(m_ray / m_thr)}",
                "met": same,
            },
        ],
        "notes": notes,
        "data": {
            "vs_naive": vs_naive,
            "vs_server": vs_server,
            "vs_server_json": m_job / m_server_json,
            "rss_ratio": rss_ratio,
            "local_ratio": local_ratio,
            "ray_ratio": m_ray / m_thr,
        },
    }


def run_ray() -> dict[str, Any]:
    """Only the Ray section (``ZMD_BENCH_BATCH_ONLY=ray``): engine="ray" vs the default engine
    on the same 1M-row Parquet dataset, against the deployment and with ``local=True``, at the
    job's defaults, interleaved rounds; the same output checked part for part. Run it with
    another checkout's ``src`` first on ``PYTHONPATH`` to measure that code the same way."""
    root = c.isolated_env("batch-ray")
    c.zmd_stack()
    import pandas as pd
    import ray

    import zenml_model_deployers
    from zenml_model_deployers.batch import run_batch
    from zenml_model_deployers.flavors import get_deployer
    from zenml_model_deployers.flavors.mlflow.config import MLflowDeploymentConfig

    load = os.getloadavg()
    model_uri = _model(root / "model")
    big = _write_parquet(_frame(BIG, seed=2), root / "data-1m", 10)
    d = get_deployer("zmd-mlflow")
    svc = d.deploy(
        MLflowDeploymentConfig(deployment_name="bench-batch-ray", model_uri=model_uri),
        timeout=TIMEOUT,
    )
    rates: dict[str, list[float]] = {k: [] for k in ("ray", "threads", "ray_local", "local")}
    same = True
    try:
        t0 = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        ray_start = time.perf_counter() - t0
        try:
            run_batch(big, svc, engine="ray", concurrency=2, progress=False)  # warm workers
            for r in range(ROUNDS):
                for name, kw in (
                    ("ray", dict(service=svc, engine="ray", concurrency=2)),
                    ("threads", dict(service=svc)),
                    ("ray_local", dict(local=True, model_uri=model_uri, engine="ray")),
                    ("local", dict(local=True, model_uri=model_uri)),
                ):
                    out = root / f"{name}-{r}"
                    _, rep = run_batch(big, output_uri=str(out), progress=False, **kw)  # type: ignore[arg-type]
                    rates[name].append(rep.rows_per_second)
                    if r == 0 and name != "ray":
                        same &= pd.read_parquet(out).equals(pd.read_parquet(root / "ray-0"))
        finally:
            ray.shutdown()
    finally:
        d.delete(svc)
    m = {k: c.median(v) for k, v in rates.items()}
    load_after = os.getloadavg()
    code = Path(zenml_model_deployers.__file__).resolve().parents[2]
    return {
        "name": "batch-ray",
        "title": f"Batch inference on Ray vs the default engine ({code})",
        "method": (
            f"1M rows (10 Parquet files), job defaults; {ROUNDS} rounds interleaved, medians; "
            "a local Ray (num_cpus=2) started and warmed before timing "
            f"({ray_start:.1f} s to start). Load average before: {load[0]:.1f} {load[1]:.1f} "
            f"{load[2]:.1f}; after: {load_after[0]:.1f} {load_after[1]:.1f} {load_after[2]:.1f}."
        ),
        "tables": [
            {
                "caption": "Rows per second (medians)",
                "headers": ["job", "rows/s", "ratio"],
                "rows": [
                    ["threads, against the deployment", f"{m['threads']:,.0f}", "1.00x"],
                    [
                        'engine="ray" (2 tasks), against the deployment',
                        f"{m['ray']:,.0f}",
                        c.fmt_ratio(m["ray"] / m["threads"]),
                    ],
                    ["local=True, threads", f"{m['local']:,.0f}", "1.00x"],
                    [
                        'local=True, engine="ray"',
                        f"{m['ray_local']:,.0f}",
                        c.fmt_ratio(m["ray_local"] / m["local"]),
                    ],
                ],
            }
        ],
        "goals": [
            {
                "goal": 'engine="ray": same output as the default engine',
                "value": f"{'same' if same else 'DIFFERENT'}; ray/threads "
                f"{c.fmt_ratio(m['ray'] / m['threads'])}",
                "met": same,
            }
        ],
        "notes": [],
        "data": {"rates": rates, "load": [load, load_after], "same": same, "code": str(code)},
    }


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--rss-child":
        _rss_child(sys.argv[2])
    elif os.environ.get("ZMD_BENCH_BATCH_ONLY") == "ray":
        c.main_for("batch-ray", run_ray)
    else:
        c.main_for("batch", run)

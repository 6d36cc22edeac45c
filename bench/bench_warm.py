"""The floor of a local start (issue 15): a cold server process against a fork from a warm one.

- ``cold``: ``python -m zenml_model_deployers.flavors.mlflow.serve`` (what `zmd-mlflow` runs now:
  one Python that imports MLflow, resolves the model and runs MLflow's uvicorn command in itself)
  -> first good prediction;
- ``fork``: a warm process per environment, MLflow's scoring server, uvicorn and scikit-learn
  imported, forks on request; the child runs the same code after its imports (resolve, MLflow's
  command, uvicorn) -> first good prediction.

Also reported: what the warm process holds that a fork would copy (threads besides the main
one, open sockets), its resident memory (paid once per environment, while it serves nothing),
and each server's unique memory (USS: what a fork shares with its parent is not counted).
Alternating, median of N repeats.

Usage: ``.venv/bin/python bench/bench_warm.py [--json PATH]``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as c  # noqa: E402

REPEATS = 5

# The warm process: imports, reports its state, then forks one server per line on stdin.
ZYGOTE = textwrap.dedent(
    """
    import json, os, sys, threading
    import mlflow.pyfunc.scoring_server, mlflow.sklearn, sklearn.dummy, uvicorn, fastapi
    import psutil
    from zenml_model_deployers.flavors.mlflow import serve
    me = psutil.Process()
    print("STATE " + json.dumps({
        "threads": threading.active_count(),
        "os_threads": me.num_threads(),
        "sockets": len(me.net_connections("all")),
        "rss_mib": me.memory_info().rss / 2**20,
    }), flush=True)
    for line in sys.stdin:
        port, model, rev = line.split()
        pid = os.fork()
        if pid == 0:
            os.setsid()
            log = os.open(rev + ".log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.dup2(log, 1); os.dup2(log, 2)
            try:
                serve.main(["--model-uri", model, "--revision-dir", rev, "--port", port])
            finally:
                os._exit(0)
        print("CHILD", pid, flush=True)
    """
)


def _uss(pid: int) -> float:
    import psutil

    try:
        return float(psutil.Process(pid).memory_full_info().uss) / 2**20
    except psutil.Error:
        return float("nan")


def run(repeats: int = REPEATS) -> dict[str, Any]:
    """Runs the benchmark (inside an isolated env) and returns its result."""
    root = c.isolated_env("warm")
    models = c.build_models(root / "models")
    zyg = subprocess.Popen(
        [c.PYTHON, "-c", ZYGOTE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert zyg.stdin is not None and zyg.stdout is not None
    state_line = zyg.stdout.readline()
    import json

    state = json.loads(state_line.split(" ", 1)[1])
    times: dict[str, list[float]] = {"cold": [], "fork": []}
    uss: dict[str, list[float]] = {"cold": [], "fork": []}
    load = os.getloadavg()
    try:
        for i in range(repeats):
            for kind in ("cold", "fork") if i % 2 == 0 else ("fork", "cold"):
                port = c.free_port()
                rev = root / "revisions" / f"{kind}-{i}"
                t0 = time.perf_counter()
                rev.parent.mkdir(exist_ok=True)
                if kind == "cold":
                    with open(str(rev) + ".log", "ab") as log:
                        p = subprocess.Popen(
                            [c.PYTHON, "-m", "zenml_model_deployers.flavors.mlflow.serve"]
                            + ["--model-uri", models["a"], "--revision-dir", str(rev)]
                            + ["--port", str(port)],
                            stdout=log,
                            stderr=subprocess.STDOUT,
                            start_new_session=True,
                        )
                    pid = p.pid
                else:
                    zyg.stdin.write(f"{port} {models['a']} {rev}\n")
                    zyg.stdin.flush()
                    pid = int(zyg.stdout.readline().split()[1])
                t1 = c.wait_prediction(
                    f"http://127.0.0.1:{port}/invocations",
                    [0],
                    timeout=120,
                    proc=p if kind == "cold" else None,
                )
                times[kind].append(t1 - t0)
                time.sleep(0.5)
                uss[kind].append(_uss(pid))
                c.terminate_tree(pid)
                print(f"  repeat {i + 1}: {kind} {t1 - t0:.2f} s", file=sys.stderr, flush=True)
    finally:
        zyg.stdin.close()
        c.terminate_tree(zyg.pid)
    med = {k: c.median(v) for k, v in times.items()}
    ratio = med["fork"] / med["cold"] if med["cold"] else None
    return {
        "name": "warm",
        "title": "Start floor: cold server process vs fork of a warm process",
        "method": (
            f"Median of {repeats} alternating repeats; launch (or fork request) -> first good "
            f"prediction polled every 50 ms. Load average (1/5/15) at start: "
            f"{'/'.join(f'{x:.1f}' for x in load)}."
        ),
        "tables": [
            {
                "caption": "Start to first good prediction",
                "headers": ["variant", "runs (s)", "median", "ratio to cold", "server USS MiB"],
                "rows": [
                    [
                        k,
                        ", ".join(f"{x:.2f}" for x in times[k]),
                        c.fmt_s(med[k]),
                        c.fmt_ratio(1.0 if k == "cold" else ratio),
                        f"{c.median(uss[k]):.0f}",
                    ]
                    for k in ("cold", "fork")
                ],
            },
            {
                "caption": "The warm process before any fork",
                "headers": ["Python threads", "OS threads", "sockets", "RSS MiB (idle)"],
                "rows": [
                    [
                        state["threads"],
                        state["os_threads"],
                        state["sockets"],
                        f"{state['rss_mib']:.0f}",
                    ]
                ],
            },
        ],
        "goals": [],
        "notes": [],
        "data": {"times": times, "uss": uss, "state": state},
    }


if __name__ == "__main__":
    c.main_for("warm", run)

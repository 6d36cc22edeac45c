"""Where `bentoml serve`'s start-up time goes (issue 15), on the bench's one-model bento.

Each repeat starts ``python -m bentoml serve TAG`` and watches its process tree every 10 ms:

1. launch -> the first worker process appears (the `bentoml serve` process: Python, BentoML's
   import, the bento's lookup, the supervisor, which then spawns the API server worker);
2. worker spawned -> ``/readyz`` answers 200 (the worker: Python, BentoML's import, the
   service module's import, the model's load, the HTTP server);
3. ready -> first good prediction.

Also measured alone, alternating with the serves: ``python -c "pass"`` (the interpreter),
``import bentoml``, and ``bentoml.load(TAG)`` (importing the bento's service, which
`bentoml serve` does before it spawns the worker, and the worker does again). And
the tree at rest: processes, which of them listen on no port, RSS.

Usage: ``.venv/bin/python bench/bench_bentoml_start.py [--json PATH]``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_bentoml as bb  # noqa: E402
import common as c  # noqa: E402

TIMEOUT = 120
REPEATS = 5


def _python(code: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([c.PYTHON, "-c", code], check=True, timeout=TIMEOUT)
    return time.perf_counter() - t0


def _serve(tag: str, root: Path, i: int) -> dict[str, Any]:
    import psutil
    import requests

    port = c.free_port()
    argv = [c.PYTHON, "-m", "bentoml", "serve", tag, "--host", "127.0.0.1", "--port", str(port)]
    base = f"http://127.0.0.1:{port}"
    t0 = time.perf_counter()
    proc = c.start_logged(argv, root / f"serve-{i}.log")
    top = psutil.Process(proc.pid)
    t_child = t_ready = None
    try:
        deadline = time.monotonic() + TIMEOUT
        while t_ready is None and time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"bentoml serve exited with {proc.returncode}")
            if t_child is None and top.children():
                t_child = time.perf_counter()
            try:
                if requests.get(base + "/readyz", timeout=2).status_code == 200:
                    t_ready = time.perf_counter()
            except requests.RequestException:
                pass
            time.sleep(0.01)
        if t_ready is None:
            raise TimeoutError("not ready")
        t_pred = bb._wait(base + "/classify", proc=proc)
        time.sleep(1.0)
        procs = [top, *top.children(recursive=True)]
        rss = sum(p.memory_info().rss for p in procs) / 2**20
        idle = [
            p
            for p in procs
            if not any(cn.status == psutil.CONN_LISTEN for cn in p.net_connections("tcp"))
        ]
        parent_rss = top.memory_info().rss / 2**20
        parent_listens = top not in idle
    finally:
        c.terminate_tree(proc.pid)
    t_child = t_child if t_child is not None else t_ready
    return {
        "spawn": t_child - t0,
        "worker": t_ready - t_child,
        "predict": t_pred - t_ready,
        "total": t_pred - t0,
        "processes": len(procs),
        "not_listening": len(idle),
        "rss_mib": rss,
        "parent_rss_mib": parent_rss,
        "parent_listens": parent_listens,
    }


def run(repeats: int = REPEATS) -> dict[str, Any]:
    """Runs the benchmark (inside an isolated env) and returns its result."""
    root = c.isolated_env("bentoml-start")
    os.environ["BENTOML_HOME"] = str(root / "bentoml")
    os.environ["BENTOML_DO_NOT_TRACK"] = "True"
    tag, _ = bb._bento(root)
    load = os.getloadavg()
    serves: list[dict[str, Any]] = []
    imports: list[float] = []
    loads: list[float] = []
    bare: list[float] = []
    for i in range(repeats):
        bare.append(_python("pass"))
        imports.append(_python("import bentoml"))
        loads.append(_python(f"import bentoml; bentoml.load({tag!r})"))
        serves.append(_serve(tag, root, i))
        print(f"  repeat {i + 1}: {serves[-1]}", file=sys.stderr, flush=True)
    med = {k: c.median([s[k] for s in serves]) for k in ("spawn", "worker", "predict", "total")}
    rows = [
        ["1. launch -> worker spawned (`bentoml serve` process)", c.fmt_s(med["spawn"])],
        ["2. worker spawned -> /readyz 200 (API server worker)", c.fmt_s(med["worker"])],
        ["3. ready -> first good prediction", c.fmt_s(med["predict"])],
        ["total: launch -> first good prediction", c.fmt_s(med["total"])],
        ['alone: `python -c "pass"`', c.fmt_s(c.median(bare))],
        ['alone: `python -c "import bentoml"`', c.fmt_s(c.median(imports))],
        [
            "alone: `bentoml.load(TAG)` (the service's import, as `bentoml serve` does first)",
            c.fmt_s(c.median(loads)),
        ],
    ]
    last = serves[-1]
    return {
        "name": "bentoml_start",
        "title": "BentoML: where `bentoml serve`'s start-up goes",
        "method": (
            f"Median of {repeats} repeats, each: bare Python, `import bentoml`, then one "
            "`bentoml serve TAG` watched every 10 ms. Load average (1/5/15) at start: "
            f"{'/'.join(f'{x:.1f}' for x in load)}."
        ),
        "tables": [
            {"caption": "Start-up phases (medians)", "headers": ["phase", "s"], "rows": rows},
            {
                "caption": "The serving tree at rest (last repeat)",
                "headers": [
                    "processes",
                    "not listening",
                    "RSS MiB",
                    "`bentoml serve` RSS MiB",
                    "it listens",
                ],
                "rows": [
                    [
                        last["processes"],
                        last["not_listening"],
                        f"{last['rss_mib']:.0f}",
                        f"{last['parent_rss_mib']:.0f}",
                        "yes" if last["parent_listens"] else "no",
                    ]
                ],
            },
        ],
        "goals": [],
        "notes": [],
        "data": {"serves": serves, "imports": imports, "loads": loads, "bare": bare},
    }


if __name__ == "__main__":
    c.main_for("bentoml_start", run)

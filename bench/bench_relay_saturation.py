"""The relay at saturation in front of a real MLflow server (2 workers), side by side with the
server's own port, with the relay's metrics on (they always are), and the direct data path.

Targets, each in front of the same MLflow scoring server with 2 workers (sklearn DummyClassifier;
the command a `zmd-mlflow` deployment runs, ``flavors/mlflow/serve.py``, as `mlflow models serve`
runs it):
``direct`` (the server's port), ``direct+metrics`` (a second such server with the direct data
path's request-counting middleware, ``serve.py --metrics-dir``), ``base:REV`` (the relay committed at each ``--base``, run from a
copy of its file) and ``relay`` (this tree). ``direct-path``: a real `zmd-mlflow` deployment
(ZenML in a temporary config dir) with ``workers=2, data_path="direct"``: its own uvicorn (same
MLflow scoring app, same model) accepts on the deployment's URL; its front's CPU is shown.
``default``: a `zmd-mlflow` deployment made with the defaults but ``workers=2`` (the path it
takes is printed: ``data_path="auto"`` takes the direct data path where eligible).
With ``--bentoml`` (wrk only): a bento (sklearn DummyClassifier behind a ``classify`` API, as
``bench_bentoml.py``) deployed with `zmd-bentoml`'s defaults: ``bento-direct`` is its
``bentoml serve``'s own (private) port, ``bento-default`` the deployment's URL (the direct data
path where eligible: the same server's API worker accepts there, counting what it takes), and
``bento-relay`` a second deployment of the same bento with ``data_path="relay"`` (ratios to
``bento-direct``); an update of the default bento deployment (a new revision: a bento argument)
runs under wrk as well. ``--only-bentoml`` leaves out the MLflow targets but ``direct``.
Each run also records how the server's connections spread over its 2 workers (``spread``: the
kernel hands each accepted connection to whichever worker accepts first, so a run can load one
worker far more than the other: a main source of run-to-run noise at 16 connections). At the
end, an update of the default deployment (model a -> b) runs under wrk (16 connections)
and its errors are counted. Load: ``wrk`` (2 threads, ``--seconds`` each, 16 and
64 connections, POST ``{"inputs": [[1.0, 2.0]]}``) when it is installed
(``apt-get install -y wrk``), else a Python asyncio client (one process, kept-alive connections):
the table says which. Targets are interleaved over ``--rounds`` rounds; medians of req/s and p99,
ratios to ``direct`` from the same run; the relay's CPU time per request from /proc; non-2xx
answers and socket errors are counted (they must be 0). The load average is printed with the
numbers: on a shared 2-core machine the client, the relay and the server compete for the cores.

Usage: ``.venv/bin/python bench/bench_relay_saturation.py [--base REV ...] [--seconds 8]
[--no-direct-path] [--bentoml]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_relay import base_relays, start_relay  # noqa: E402
from common import (  # noqa: E402
    PREDICT_BODY,
    PYTHON,
    build_models,
    end_our_processes,
    free_port,
    isolated_env,
    remove_root,
    start_logged,
    terminate_tree,
    wait_prediction,
    zmd_stack,
)

LUA = """wrk.method = "POST"
wrk.body = '%s'
wrk.headers["Content-Type"] = "application/json"
"""


def _wrk(url: str, conns: int, seconds: float, lua: Path) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{conns}", f"-d{seconds:g}s", "--latency", "-s", str(lua), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}
    p99_ms = float(p99.group(1)) * scale[p99.group(2)] if p99 else float("nan")
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (
        sum(int(x) for x in sock.groups()) if sock else 0
    )
    return {"rps": rps, "p99_ms": p99_ms, "requests": total, "errors": errors}


async def _py_load(port: int, conns: int, seconds: float) -> dict[str, float]:
    req = (
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(PREDICT_BODY), PREDICT_BODY)
    )
    lat: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds

    async def one() -> None:
        nonlocal errors
        r, w = await asyncio.open_connection("127.0.0.1", port)
        while time.monotonic() < deadline:
            t = time.perf_counter()
            w.write(req)
            head = await r.readuntil(b"\r\n\r\n")
            n = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await r.readexactly(n)
            lat.append(time.perf_counter() - t)
            if not head.startswith(b"HTTP/1.1 200"):
                errors += 1
        w.close()

    await asyncio.gather(*(one() for _ in range(conns)))
    lat.sort()
    return {
        "rps": len(lat) / seconds,
        "p99_ms": lat[int(0.99 * (len(lat) - 1))] * 1e3 if lat else float("nan"),
        "requests": len(lat),
        "errors": errors,
    }


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its live descendants (the server and its workers)."""
    import psutil

    root = psutil.Process(pid)
    total = 0.0
    for p in [root, *root.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            continue
    return total


def _spread(pid: int, port: int) -> str:
    """Established connections on `port` per process of `pid`'s tree (its workers)."""
    import psutil

    counts = []
    for p in psutil.Process(pid).children(recursive=True):
        try:
            n = sum(
                1
                for k in p.net_connections("tcp")
                if k.status == psutil.CONN_ESTABLISHED and k.laddr.port == port
            )
        except psutil.Error:
            continue
        if n:
            counts.append(n)
    return "/".join(str(n) for n in sorted(counts, reverse=True)) or "0"


def _update_under_load(
    deployer: object, cfg: object, url: str, lua: Path, body: bytes = PREDICT_BODY
) -> dict[str, object]:
    """An update of a deployment while wrk (2 threads, 16 connections) loads it."""
    import requests

    # wrk prints its counts only at the end of a run: back-to-back 5 s runs cover the update
    # from 2 s before it starts until it finished (bounded: 10 minutes).
    done = threading.Event()
    runs: list[dict[str, float]] = []

    def load() -> None:
        deadline = time.monotonic() + 600
        while not done.is_set() and time.monotonic() < deadline:
            runs.append(_wrk(url, 16, 5, lua))

    t = threading.Thread(target=load)
    t.start()
    time.sleep(2)
    t0 = time.monotonic()
    try:
        deployer.deploy(cfg, timeout=300)  # type: ignore[attr-defined]
    finally:
        took = time.monotonic() - t0
        done.set()
        t.join()
    after = requests.post(
        url, data=body, headers={"Content-Type": "application/json"}, timeout=30
    ).json()
    return {
        "update_s": took,
        "wrk_s": 5 * len(runs),
        "requests": sum(int(r["requests"]) for r in runs),
        "errors": sum(int(r["errors"]) for r in runs),
        "after": after,
    }


def main() -> None:
    """Runs the benchmark and prints the table."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", action="append", help="baseline relay revision (repeatable)")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--conns", default="16,64")
    ap.add_argument("--client", choices=["auto", "wrk", "python"], default="auto")
    ap.add_argument("--no-direct-path", action="store_true", help="skip the direct-path target")
    ap.add_argument("--bentoml", action="store_true", help="add zmd-bentoml's default (wrk)")
    ap.add_argument(
        "--only-bentoml", action="store_true", help="--bentoml, MLflow's direct target only"
    )
    args = ap.parse_args()
    if args.only_bentoml:
        args.bentoml = args.no_direct_path = True
    root = isolated_env("sat")  # before ZenML is imported (the direct-path deployment)
    client = args.client
    if client == "auto":
        client = "wrk" if shutil.which("wrk") else "python"
    conns = [int(c) for c in args.conns.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="zmd-bench-sat-"))
    lua = tmp / "post.lua"
    lua.write_text(LUA % PREDICT_BODY.decode())
    models = build_models(tmp / "models")
    model = models["a"]
    # `mlflow models serve` runs `uvicorn` from PATH: the venv's.
    os.environ["PATH"] = f"{Path(PYTHON).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    port = free_port()
    # The server a zmd-mlflow deployment runs (MLflow's scoring-server command, uvicorn in
    # process: flavors/mlflow/serve.py), so that every target serves with the same code.
    server = start_logged(
        [PYTHON, "-m", "zenml_model_deployers.flavors.mlflow.serve", "--model-uri", model]
        + ["--revision-dir", str(tmp / "rev"), "--port", str(port), "--workers", "2"],
        tmp / "server.log",
    )
    # The same server counting its requests (flavors/mlflow/metered.py, as on the direct data
    # path): the middleware's cost against `direct`, both on a private port.
    mport = free_port()
    metered = start_logged(
        [PYTHON, "-m", "zenml_model_deployers.flavors.mlflow.serve", "--model-uri", model]
        + ["--revision-dir", str(tmp / "rev"), "--port", str(mport), "--workers", "2"]
        + ["--metrics-dir", str(tmp / "metrics" / "m"), "--revision", "m"],
        tmp / "metered.log",
    )
    relays: list[subprocess.Popen[bytes]] = []
    deployer = svc = dsvc = bento_deployer = bsvc = bcfg = None
    default_path = bento_path = ""
    luas: dict[str, Path] = {}
    paths: dict[str, str] = {}
    update: dict[str, object] | None = None
    bupdate: dict[str, object] | None = None
    try:
        try:
            wait_prediction(f"http://127.0.0.1:{port}/invocations", [0], proc=server)
        except (RuntimeError, TimeoutError) as e:
            raise RuntimeError(f"{e}: {(tmp / 'server.log').read_text()[-2000:]}") from e
        wait_prediction(f"http://127.0.0.1:{mport}/invocations", [0], proc=metered)
        ports = {"direct": port, "direct+metrics": mport}
        pids: dict[str, int] = {}
        for i, (rev, f) in enumerate(base_relays(args.base or [], tmp).items()):
            p, ports[f"base:{rev}"] = start_relay([sys.executable, str(f)], port, tmp, f"b{i}")
            relays.append(p)
            pids[f"base:{rev}"] = p.pid
        p, ports["relay"] = start_relay(
            [sys.executable, "-m", "zenml_model_deployers.local.relay"], port, tmp, "relay"
        )
        relays.append(p)
        pids["relay"] = p.pid
        trees = {k: (server.pid, port) for k in ports}  # whose workers' spread to show
        trees["direct+metrics"] = (metered.pid, mport)
        from zenml_model_deployers.flavors import get_deployer
        from zenml_model_deployers.flavors.mlflow.config import MLflowDeploymentConfig

        zmd_stack()
        deployer = get_deployer("zmd-mlflow")
        if not args.no_direct_path:
            direct_cfg = MLflowDeploymentConfig(
                deployment_name="sat-direct", model_uri=model, workers=2, data_path="direct"
            )
            svc = deployer.deploy(direct_cfg, timeout=300)
            assert svc.status.public_port is not None and svc.status.server is not None
            ports["direct-path"] = svc.status.public_port
            pids["direct-path"] = svc.status.relay.pid  # its front: out of the data path
            trees["direct-path"] = (svc.status.server.pid, svc.status.public_port)
        default_cfg = MLflowDeploymentConfig(
            deployment_name="sat-default", model_uri=model, workers=2
        )
        if not args.only_bentoml:
            dsvc = deployer.deploy(default_cfg, timeout=300)
            assert dsvc.status.public_port is not None and dsvc.status.server is not None
            default_path = "direct" if dsvc.status.direct else "relay"
            ports["default"] = dsvc.status.public_port
            pids["default"] = dsvc.status.relay.pid
            trees["default"] = (
                dsvc.status.server.pid,
                dsvc.status.public_port if dsvc.status.direct else dsvc.status.server_port,
            )
        if args.bentoml and client == "wrk":
            from bench_bentoml import BODY as BENTO_BODY
            from bench_bentoml import _bento

            from zenml_model_deployers.flavors.bentoml.config import BentoMLDeploymentConfig

            tag, _ = _bento(tmp)
            bento_deployer = get_deployer("zmd-bentoml")
            bcfg = BentoMLDeploymentConfig(deployment_name="sat-bento", model_uri=tag)
            bsvc = bento_deployer.deploy(bcfg, timeout=300)
            bento_path = "direct" if getattr(bsvc.status, "direct", False) else "relay"
            brsvc = bento_deployer.deploy(
                BentoMLDeploymentConfig(
                    deployment_name="sat-bento-relay", model_uri=tag, data_path="relay"
                ),
                timeout=300,
            )
            blua = tmp / "bento.lua"
            blua.write_text(LUA % BENTO_BODY.decode())
            private = bsvc.status.server_port or bsvc.status.public_port
            ports["bento-direct"], ports["bento-default"] = private, bsvc.status.public_port
            ports["bento-relay"] = brsvc.status.public_port
            pids["bento-default"] = bsvc.status.relay.pid
            pids["bento-relay"] = brsvc.status.relay.pid
            for k in ("bento-direct", "bento-default"):
                trees[k] = (bsvc.status.server.pid, private)
            trees["bento-relay"] = (brsvc.status.server.pid, brsvc.status.server_port)
            for k in ("bento-direct", "bento-default", "bento-relay"):
                luas[k], paths[k] = blua, "/classify"
        if args.only_bentoml:
            for k in [k for k in ports if k != "direct" and not k.startswith("bento")]:
                ports.pop(k)
        names = list(ports)
        spreads: dict[tuple[str, int], list[str]] = {}
        server_cpu_dp: list[float] = []
        server_cpu_m: list[float] = []
        server_cpu_df: list[float] = []
        server_cpu_b: list[float] = []  # `bentoml serve`'s (bento-direct runs)
        server_cpu_bd: list[float] = []  # the same server's (bento-default runs: it counts)
        res: dict[tuple[str, int], list[dict[str, float]]] = {}
        cpu: dict[tuple[str, int], list[float]] = {}
        server_cpu: list[float] = []  # the server's CPU per request (direct runs)
        loads = []
        for rnd in range(args.rounds):
            for c in conns:
                for k in names[rnd % len(names) :] + names[: rnd % len(names)]:
                    url = f"http://127.0.0.1:{ports[k]}{paths.get(k, '/invocations')}"
                    cpu0 = _cpu_seconds(pids[k]) if k in pids else 0.0
                    s0 = _tree_cpu_seconds(trees[k][0])
                    got: list[str] = []
                    look = threading.Timer(
                        args.seconds / 2,
                        lambda k=k, got=got: got.append(_spread(*trees[k])),
                    )
                    look.start()
                    if client == "wrk":
                        r = _wrk(url, c, args.seconds, luas.get(k, lua))
                    else:
                        r = asyncio.run(_py_load(ports[k], c, args.seconds))
                    look.join()
                    spreads.setdefault((k, c), []).extend(got)
                    res.setdefault((k, c), []).append(r)
                    if (
                        k
                        in (
                            "direct",
                            "direct+metrics",
                            "direct-path",
                            "default",
                            "bento-direct",
                            "bento-default",
                        )
                        and r["requests"]
                    ):
                        used = _tree_cpu_seconds(trees[k][0]) - s0
                        {
                            "direct": server_cpu,
                            "direct+metrics": server_cpu_m,
                            "default": server_cpu_df,
                            "bento-direct": server_cpu_b,
                            "bento-default": server_cpu_bd,
                        }.get(k, server_cpu_dp).append(used / r["requests"] * 1e6)
                    if k in pids and r["requests"]:
                        used = _cpu_seconds(pids[k]) - cpu0
                        cpu.setdefault((k, c), []).append(used / r["requests"] * 1e6)
                    loads.append(os.getloadavg()[0])
        counted = None
        if svc is not None:  # what its server counted (read by its front) vs what wrk sent
            sent = sum(
                int(r["requests"]) for (k, _), rs in res.items() if k == "direct-path" for r in rs
            )
            got = svc.read_revision_metrics()[svc.config.config_hash()]
            counted = (sent, got.requests, got.errors)
        if dsvc is not None and client == "wrk":
            logs_before = set(dsvc.workdir.glob("server-*.log"))
            update = _update_under_load(
                deployer,
                default_cfg.model_copy(update={"model_uri": models["b"]}),
                f"http://127.0.0.1:{ports['default']}/invocations",
                lua,
            )
            live = deployer.find_deployment("sat-default")
            if live is not None:
                update["path_after"] = "direct" if live.status.direct else "relay"
                # Each server start writes a new log: 1 per update (no second server start).
                update["starts"] = len(set(live.workdir.glob("server-*.log")) - logs_before)
        if bsvc is not None and bcfg is not None and client == "wrk":
            from bench_bentoml import BODY as BENTO_BODY

            logs_before = set(bsvc.workdir.glob("server-*.log"))
            bupdate = _update_under_load(
                bento_deployer,
                bcfg.model_copy(update={"args": {"zmd_bench": "2"}}),
                f"http://127.0.0.1:{ports['bento-default']}/classify",
                luas["bento-default"],
                BENTO_BODY,
            )
            live = bento_deployer.find_deployment("sat-bento")  # type: ignore[union-attr]
            if live is not None:
                bupdate["path_after"] = "direct" if live.status.direct else "relay"
                bupdate["starts"] = len(set(live.workdir.glob("server-*.log")) - logs_before)
    finally:
        for d, name in ((deployer, "sat-direct"), (deployer, "sat-default")):
            live = d.find_deployment(name) if d is not None else None
            if live is not None:
                d.delete(live)  # type: ignore[union-attr]
        for name in ("sat-bento", "sat-bento-relay"):
            live = bento_deployer.find_deployment(name) if bento_deployer is not None else None
            if live is not None:
                bento_deployer.delete(live)  # type: ignore[union-attr]
        for p in relays:
            p.terminate()
        for p in relays:
            p.wait(10)
        terminate_tree(server.pid)
        terminate_tree(metered.pid)
        shutil.rmtree(tmp, ignore_errors=True)
        end_our_processes(root)
        remove_root(root)
    srv = statistics.median(server_cpu)
    print(
        f"relay at saturation, MLflow server with 2 workers; client: {client} "
        f"({'2 threads, ' if client == 'wrk' else ''}{args.seconds:g} s per run, "
        f"{args.rounds} rounds interleaved); load average during runs: median "
        f"{statistics.median(loads):.2f} (min {min(loads):.2f}, max {max(loads):.2f})"
    )
    w = max(12, *(len(k) for k in names))
    print(
        f"{'target':<{w}} {'conns':>5} {'req/s':>8} {'x direct':>9} {'p99 ms':>8} "
        f"{'p99 x dir':>9} {'errors':>7} {'CPU us/req':>11}  per round: worker spread:req/s"
    )
    if default_path:
        print(f"a default zmd-mlflow deployment takes the {default_path} data path")
    if bento_path:
        print(f"a default zmd-bentoml deployment takes the {bento_path} data path")
    for c in conns:
        for k in names:
            base = "bento-direct" if k.startswith("bento") else "direct"
            d_rps = statistics.median(r["rps"] for r in res[(base, c)])
            d_p99 = statistics.median(r["p99_ms"] for r in res[(base, c)])
            rs = res[(k, c)]
            rps = statistics.median(r["rps"] for r in rs)
            p99 = statistics.median(r["p99_ms"] for r in rs)
            errs = sum(int(r["errors"]) for r in rs)
            cu = f"{statistics.median(cpu[(k, c)]):11.1f}" if (k, c) in cpu else f"{'-':>11}"
            print(
                f"{k:<{w}} {c:>5} {rps:8.0f} {rps / d_rps:9.2f} {p99:8.2f} "
                f"{p99 / d_p99:9.2f} {errs:>7} {cu}  "
                + " ".join(
                    f"{sp}:{r['rps']:.0f}"
                    for sp, r in zip(spreads.get((k, c), []), rs, strict=False)
                )
            )
    # Where the server, the relay (and the client) share saturated cores, throughput scales
    # with the CPU each request costs: a load-independent estimate of the ratio to direct.
    print(f"MLflow server's own CPU per request (direct runs): median {srv:.0f} us")
    if server_cpu_m:
        m = statistics.median(server_cpu_m)
        print(
            f"the same server counting its requests (direct+metrics): median {m:.0f} us "
            f"({m / srv:.3f}x; per run: {' '.join(f'{x:.0f}' for x in server_cpu_m)} vs "
            f"{' '.join(f'{x:.0f}' for x in server_cpu)})"
        )
    if counted is not None:
        print(
            f"direct-path: wrk got {counted[0]} answers; the front's metrics count "
            f"{counted[1]} requests ({counted[2]} errors) for the revision (+ readiness checks)"
        )
    if server_cpu_df:
        print(
            "default deployment's server CPU per request: median "
            f"{statistics.median(server_cpu_df):.0f} us"
        )
    if server_cpu_dp:
        print(
            "direct-path deployment's server CPU per request: median "
            f"{statistics.median(server_cpu_dp):.0f} us"
        )
    for what, u in (("the default deployment", update), ("the default bento", bupdate)):
        if u is None:
            continue
        print(
            f"update of {what} under wrk (2 threads, 16 connections, "
            f"{u['wrk_s']} s in 5 s runs): deploy took {u['update_s']:.1f} s; "
            f"{u['requests']} requests, {u['errors']} failed (non-2xx + socket "
            f"errors); afterwards the URL answers {u['after']} on the "
            f"{u.get('path_after', '?')} data path; servers started: "
            f"{u.get('starts', '?')}"
        )
    if server_cpu_b:
        print(
            "`bentoml serve`'s own CPU per request (bento-direct runs): median "
            f"{statistics.median(server_cpu_b):.0f} us"
        )
    if server_cpu_b and server_cpu_bd:
        b, bd = statistics.median(server_cpu_b), statistics.median(server_cpu_bd)
        front = [statistics.median(cpu[("bento-default", c)]) for c in conns]
        f = statistics.median(front)
        print(
            f"the same server on the default path (bento-default runs, counting): median {bd:.0f}"
            f" us, its front {f:.1f} us -> CPU-bound estimate {b / (bd + f):.3f}x bento-direct"
        )
    for k in names:
        rel = [statistics.median(cpu[(k, c)]) for c in conns if (k, c) in cpu]
        if rel:
            r_cpu = statistics.median(rel)
            own = statistics.median(server_cpu_b) if k.startswith("bento") else srv
            print(
                f"  {k}: {r_cpu:.1f} us/req -> CPU-bound estimate {own / (own + r_cpu):.3f}x "
                "direct (server + relay on the same cores, client aside)"
            )


if __name__ == "__main__":
    main()

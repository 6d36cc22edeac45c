"""zmd-bentoml: deploy -> first good prediction, and predict() throughput, vs raw `bentoml serve`.

One bento (a BentoML 1.4 ``@bentoml.service`` whose ``classify`` API serves a saved sklearn
``DummyClassifier`` predicting 0), built once before anything is timed, in a BentoML store
inside the isolated root (BENTOML_HOME; BENTOML_DO_NOT_TRACK=True).

(1) Deploy: raw ``python -m bentoml serve TAG --host 127.0.0.1 --port P`` started by hand,
    POST /classify polled every 50 ms until it answers ``[0]``, vs ours:
    ``BentoMLDeployer.deploy(BentoMLDeploymentConfig(...))`` of a new deployment each repeat
    (deleted afterwards), polled the same way through the returned URL. Interleaved raw, ours,
    raw, ours...; medians.
(2) Throughput: one deployment; sequential single-client loops of a fixed count through
    ``svc.predict(rows, api="classify")``, a raw kept-alive ``requests.Session`` POST of the
    same body to the same (public) URL, and the same raw POST to the server's private port
    (what the relay costs). Order rotated each round; medians of the rounds.
(3) ZenML 0.98's built-in BentoML deployer (flavor `bentoml`) on the same bento, once, with a
    short timeout: ``BentoMLModelDeployer.deploy_model(BentoMLLocalDeploymentConfig(...))``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as c  # noqa: E402

REPEATS = 5
REQUESTS = 2000
ROUNDS = 3
WARMUP = 100
LOOP_LIMIT = 60  # seconds one throughput loop may take
TIMEOUT = 120
BUILTIN_TIMEOUT = 30
ROWS = [[1.0, 2.0]]
BODY = json.dumps({"input_data": ROWS}).encode()

SERVICE = '''"""The benchmark's bento: one sklearn model behind a `classify` API."""

import bentoml
import numpy as np


@bentoml.service(name="zmd_bench_service")
class BenchService:
    model_ref = bentoml.models.BentoModel({tag!r})

    def __init__(self) -> None:
        self.model = bentoml.sklearn.load_model(self.model_ref)

    @bentoml.api
    def classify(self, input_data: np.ndarray) -> np.ndarray:
        return self.model.predict(input_data)
'''


def _bento(root: Path) -> tuple[str, Path]:
    """Saves the model and builds the bento (once). Returns (bento tag, service dir)."""
    import numpy as np
    from sklearn.dummy import DummyClassifier

    from zenml_model_deployers.flavors.bentoml.packaging import build_bento, save_model

    clf = DummyClassifier(strategy="constant", constant=0).fit(
        np.array([[0.0, 1.0], [1.0, 0.0]]), [0, 1]
    )
    model_tag = save_model(clf, "zmd_bench_model")
    src = root / "bento-src"
    src.mkdir(exist_ok=True)
    (src / "bench_service.py").write_text(SERVICE.format(tag=model_tag))
    tag = build_bento("bench_service.py:BenchService", [model_tag], working_dir=str(src))
    return tag, src


def _wait(url: str, timeout: float = TIMEOUT, proc: Any = None) -> float:
    return c.wait_prediction(url, [0], timeout=timeout, proc=proc, body=BODY, key=None)


# --------------------------------------------------------------------------- (1) deploy
def _raw(tag: str, root: Path, i: int) -> float:
    port = c.free_port()
    argv = [c.PYTHON, "-m", "bentoml", "serve", tag, "--host", "127.0.0.1", "--port", str(port)]
    t0 = time.perf_counter()
    proc = c.start_logged(argv, root / f"raw-{i}.log")
    try:
        t1 = _wait(f"http://127.0.0.1:{port}/classify", proc=proc)
    finally:
        c.terminate_tree(proc.pid)
    return t1 - t0


def _ours(deployer: Any, tag: str, i: int) -> tuple[float, float]:
    """Returns (deploy call -> first good prediction, deploy call -> return)."""
    from zenml_model_deployers.flavors.bentoml.config import BentoMLDeploymentConfig

    name = f"bench-bento-{i}"
    cfg = BentoMLDeploymentConfig(deployment_name=name, model_name=name, model_uri=tag)
    svc = None
    t0 = time.perf_counter()
    try:
        svc = deployer.deploy(cfg, timeout=TIMEOUT)
        returned = time.perf_counter()
        t1 = _wait(svc.prediction_url)
    finally:
        if svc is not None:
            deployer.delete(svc)
        else:  # a failed deploy leaves nothing behind by contract; double-check
            left = deployer.find_deployment(name)
            if left is not None:
                deployer.delete(left)
    return t1 - t0, returned - t0


# --------------------------------------------------------------------------- (2) requests/s
def _throughput(deployer: Any, tag: str) -> dict[str, list[float]]:
    import requests

    from zenml_model_deployers.flavors.bentoml.config import BentoMLDeploymentConfig

    cfg = BentoMLDeploymentConfig(
        deployment_name="bench-bento-rps", model_name="bench-bento-rps", model_uri=tag
    )
    svc = deployer.deploy(cfg, timeout=TIMEOUT)
    sessions = [requests.Session(), requests.Session()]
    try:
        headers, body = svc.format_request(ROWS, api="classify")
        assert body == BODY, body
        assert svc.predict(ROWS, api="classify") == [0]
        public = svc.prediction_url
        private = f"http://127.0.0.1:{svc.status.server_port}/classify"

        def poster(session: Any, url: str) -> Any:
            def post() -> Any:
                r = session.post(url, data=body, headers=headers, timeout=60)
                assert r.status_code == 200, r.text[:200]
                return r

            return post

        clients = {
            "ours": lambda: svc.predict(ROWS, api="classify"),
            "raw": poster(sessions[0], public),
            "private": poster(sessions[1], private),
        }
        for fn in clients.values():
            for _ in range(WARMUP):
                fn()
        rates: dict[str, list[float]] = {k: [] for k in clients}
        order = list(clients)
        for r in range(ROUNDS):
            for k in order[r % 3 :] + order[: r % 3]:
                rates[k].append(c.throughput(clients[k], REQUESTS, LOOP_LIMIT))
                print(f"  round {r + 1}: {k:8s} {rates[k][-1]:7.0f} req/s", file=sys.stderr)
    finally:
        for s in sessions:
            s.close()
        deployer.delete(svc)
    return rates


# --------------------------------------------------------------------------- (3) built-in
def _last_error_line(log: str | None) -> str:
    """The daemon log's last exception line (``SomeError: ...``), or its last line."""
    if not log or not Path(log).exists():
        return "no daemon log"
    lines = [ln.strip() for ln in Path(log).read_text(errors="replace").splitlines()]
    lines = [ln for ln in lines if ln]
    errors = [ln for ln in lines if ln.split(":", 1)[0].endswith(("Error", "Exception"))]
    return (errors or lines or ["empty daemon log"])[-1][:200]


def _builtin(tag: str, src: Path) -> dict[str, Any]:
    """One bounded try of ZenML's built-in BentoML deployer; never raises."""
    out: dict[str, Any] = {"served": False, "call_s": None, "first_s": None, "reason": ""}
    svc = bd = None
    try:
        from zenml.client import Client
        from zenml.integrations.bentoml.services.bentoml_local_deployment import (
            BentoMLLocalDeploymentConfig,
            BentoMLLocalDeploymentService,
        )

        c.builtin_stack("builtin-bentoml", flavor="bentoml")
        bd = Client().active_stack.model_deployer
        port = c.free_port()
        cfg = BentoMLLocalDeploymentConfig(
            model_name="zmd_bench_model",
            model_uri=tag,
            bento_tag=tag,
            apis=["classify"],
            working_dir=str(src),
            host="127.0.0.1",
            port=port,
            pipeline_name="bench-bentoml",
            pipeline_step_name="deploy",
            timeout=BUILTIN_TIMEOUT,
        )
        t0 = time.perf_counter()
        try:
            svc = bd.deploy_model(
                config=cfg,
                service_type=BentoMLLocalDeploymentService.SERVICE_TYPE,
                timeout=BUILTIN_TIMEOUT,
            )
        finally:
            out["call_s"] = time.perf_counter() - t0
        try:  # a short grace period after the call: does it serve now?
            out["first_s"] = _wait(f"http://127.0.0.1:{port}/classify", timeout=5) - t0
            out["served"] = True
        except TimeoutError:
            daemon = _last_error_line(svc.status.log_file)
            said = svc.status.last_error or str(svc.status.state)
            out["reason"] = f"daemon died: {daemon}; deploy_model returned normally ({said})"
    except Exception as e:  # report it; do not invent a number
        out["reason"] = f"could not be driven: {type(e).__name__}: {e}"[:300]
    finally:
        if svc is not None and bd is not None:
            pid = getattr(svc.status, "pid", None)
            try:
                bd.delete_model_server(svc.uuid, timeout=10)
            except Exception as e:
                print(f"  built-in delete failed: {e}", file=sys.stderr)
            if pid:
                c.terminate_tree(pid, timeout=10)
    return out


# --------------------------------------------------------------------------- result
def run() -> dict[str, Any]:
    """Runs the benchmark (inside an isolated env) and returns its result."""
    root = c.isolated_env("bentoml")
    os.environ["BENTOML_HOME"] = str(root / "bentoml")
    os.environ["BENTOML_DO_NOT_TRACK"] = "True"
    tag, src = _bento(root)
    c.zmd_stack("zmd-bench-bento", flavor="zmd-bentoml")
    from zenml_model_deployers.flavors import get_deployer

    deployer = get_deployer("zmd-bentoml")
    times: dict[str, list[float]] = {"raw": [], "ours": [], "returned": []}
    for i in range(REPEATS):
        times["raw"].append(_raw(tag, root, i))
        first, returned = _ours(deployer, tag, i)
        times["ours"].append(first)
        times["returned"].append(returned)
        print(
            f"  repeat {i + 1}: raw {times['raw'][-1]:6.2f} s, ours {first:6.2f} s "
            f"(deploy returned at {returned:.2f} s)",
            file=sys.stderr,
            flush=True,
        )
    rates = _throughput(deployer, tag)
    builtin = _builtin(tag, src)

    med = {k: c.median(v) for k, v in times.items()}
    r_deploy = med["ours"] / med["raw"]
    rps = {k: c.median(v) for k, v in rates.items()}
    r_rps = rps["ours"] / rps["raw"]
    r_relay = rps["raw"] / rps["private"]
    if builtin["served"]:
        b_runs, b_med = "served", c.fmt_s(builtin["first_s"])
    else:
        b_runs = f"never served: {builtin['reason']}"
        b_med = "n/a" if builtin["call_s"] is None else f"call took {c.fmt_s(builtin['call_s'])}"
    deploy_rows = [
        [
            "(a) raw `bentoml serve TAG` (by hand)",
            ", ".join(f"{x:.2f}" for x in times["raw"]),
            c.fmt_s(med["raw"]),
            "1.00x",
        ],
        [
            "(b) ours: `BentoMLDeployer.deploy` (zmd-bentoml)",
            ", ".join(f"{x:.2f}" for x in times["ours"]),
            c.fmt_s(med["ours"]),
            c.fmt_ratio(r_deploy),
        ],
        [
            f"(c) ZenML built-in `BentoMLModelDeployer.deploy_model` (once, timeout "
            f"{BUILTIN_TIMEOUT} s)",
            b_runs,
            b_med,
            c.fmt_ratio(builtin["first_s"] / med["raw"]) if builtin["served"] else "n/a",
        ],
    ]
    labels = {
        "ours": '`svc.predict(rows, api="classify")` (public URL)',
        "raw": "raw kept-alive `Session.post`, same URL, same body",
        "private": "raw kept-alive `Session.post` to the server's private port (no relay)",
    }
    rps_rows = [
        [
            labels[k],
            ", ".join(f"{x:.0f}" for x in rates[k]),
            f"{rps[k]:.0f}",
            c.fmt_ratio(rps[k] / rps["raw"]),
        ]
        for k in ("ours", "raw", "private")
    ]
    print(f"ours/raw: deploy {c.fmt_ratio(r_deploy)}, req/s {c.fmt_ratio(r_rps)}", file=sys.stderr)
    return {
        "name": "bentoml",
        "title": "BentoML: deploy -> first good prediction, and requests/s",
        "method": (
            f"One BentoML {_bentoml_version()} bento (a `@bentoml.service` whose `classify` API "
            "serves an sklearn DummyClassifier saved with `bentoml.sklearn`), built once before "
            f"timing. Deploy: median of {REPEATS} repeats, raw and ours interleaved; the clock "
            "starts before `Popen` (raw) or the deploy call (ours, a new deployment each repeat) "
            "and stops when POST /classify returns `[0]` (polled every 50 ms); teardown not "
            f"timed. Requests/s: one deployment, {REQUESTS} sequential requests per loop after "
            f"{WARMUP} warm-up requests per client, {ROUNDS} rounds with the order rotated, "
            'medians; every client sends the same body (`{"input_data": [[1.0, 2.0]]}`).'
        ),
        "tables": [
            {
                "caption": "Time to first good prediction",
                "headers": ["variant", "runs (s)", "median", "ratio to raw"],
                "rows": deploy_rows,
            },
            {
                "caption": "Requests per second (one client, sequential)",
                "headers": ["client", "req/s per round", "median req/s", "ratio to raw POST"],
                "rows": rps_rows,
            },
        ],
        "goals": [
            {
                "goal": "deploy -> first prediction: ours <= 1.2x raw `bentoml serve`",
                "value": c.fmt_ratio(r_deploy),
                "met": r_deploy <= 1.2,
            },
            {
                "goal": "`predict()` >= 0.9x raw POST req/s",
                "value": c.fmt_ratio(r_rps),
                "met": r_rps >= 0.9,
            },
        ],
        "notes": [
            f"Ours: the deploy call returned after {c.fmt_s(med['returned'])} (median; bento "
            "check, store records, relay, `bentoml serve` until /readyz); the first prediction "
            f"came {c.fmt_s(med['ours'] - med['returned'])} later.",
            f"The relay's share: the same raw POST makes {rps['raw']:.0f} req/s through the "
            f"public URL and {rps['private']:.0f} req/s to the server's private port "
            f"({c.fmt_ratio(r_relay)}).",
            *(
                []
                if builtin["served"]
                else [
                    "The built-in's local service takes a BentoML 1.4 service for a pre-1.2 one "
                    "(`bentoml.Service`) and calls `serve_http_production`, which reads "
                    "`svc.runners`; its `deploy_model` logs the failed start and returns after "
                    "its timeout without raising."
                ]
            ),
        ],
        "data": {
            "times": times,
            "median": med,
            "ratio_deploy": r_deploy,
            "rps": rates,
            "ratio_rps": r_rps,
            "ratio_relay": r_relay,
            "builtin": builtin,
        },
    }


def _bentoml_version() -> str:
    from importlib import metadata

    return metadata.version("bentoml")


if __name__ == "__main__":
    c.main_for("bentoml", run)

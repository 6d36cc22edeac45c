"""Updates under load, and the relay's latency overhead.

Update: a client thread loops kept-alive POSTs (one ``requests.Session``) on the URL recorded
at the first deploy while the deployment is updated from model `a` (predicts 0) to model `b`
(predicts 1). Counted: requests, failed requests (exception or non-200), the longest run of
consecutive failures, whether the recorded URL serves `b` afterwards.

- ours: ``deployer.deploy(config_b)`` on the same deployment name (policy `update`);
- built-in, as its step does (``mlflow_model_deployer_step``): ``deploy_model(replace=True)``
  with the new model URI (a new service), then ``stop()`` on the services it found before;
- built-in, continuous deployment mode: ``deploy_model(continuous_deployment_mode=True)``,
  which deletes the matching service, then creates the new one.

URL overhead: on the same running server, 2000 kept-alive POSTs directly to its private port
and 2000 through the deployment's URL, interleaved in blocks of 200 after a warm-up. The
deployment is made with the defaults: `zmd-mlflow`'s URL is then the direct data path (the
server accepts on it itself, issue 28), so this measures what a default deployment's URL adds;
with `data_path="relay"` it was the relay.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as c  # noqa: E402

TIMEOUT = 120
LOOP_MAX_S = 240.0  # hard bound of a client loop
LOOP_MAX_N = 400_000
PAUSE = 0.001  # between requests of the looping client
SETTLE_S = 2.0  # keep looping this long after the update returned
N_LAT = 2000
BLOCK = 200
WARMUP = 200


class Looper(threading.Thread):
    """Loops POSTs on one URL with one kept-alive session; bounded in count and time."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.stop = threading.Event()
        self.records: list[tuple[float, bool, Any, str]] = []

    def run(self) -> None:
        import requests

        deadline = time.monotonic() + LOOP_MAX_S
        with requests.Session() as s:
            while (
                not self.stop.is_set()
                and time.monotonic() < deadline
                and len(self.records) < LOOP_MAX_N
            ):
                t = time.perf_counter()
                try:
                    r = s.post(self.url, data=c.PREDICT_BODY, headers=c.JSON_HEADERS, timeout=10)
                    if r.status_code == 200:
                        self.records.append((t, True, r.json()["predictions"][0], ""))
                    else:
                        self.records.append((t, False, None, f"HTTP {r.status_code}"))
                except requests.RequestException as e:
                    self.records.append((t, False, None, type(e).__name__))
                except ValueError as e:
                    self.records.append((t, False, None, type(e).__name__))
                time.sleep(PAUSE)

    def summary(self, t_update: float) -> dict[str, Any]:
        """Counts, errors, longest failure run, first new prediction, stale answers after it."""
        recs = self.records
        failed = [r for r in recs if not r[1]]
        longest = 0.0
        run_start = None
        for t, ok, _, _ in recs:
            if not ok and run_start is None:
                run_start = t
            if ok and run_start is not None:
                longest = max(longest, t - run_start)
                run_start = None
        if run_start is not None and recs:
            longest = max(longest, recs[-1][0] - run_start)
        first_new = next((t for t, ok, p, _ in recs if ok and p == 1), None)
        stale = sum(1 for t, ok, p, _ in recs if ok and p == 0 and first_new and t > first_new)
        return {
            "total": len(recs),
            "failed": len(failed),
            "errors": dict(Counter(r[3] for r in failed)),
            "longest_failure_s": longest,
            "first_new_after_s": None if first_new is None else first_new - t_update,
            "old_after_new": stale,
        }


def _probe(url: str | None) -> Any:
    """The prediction a fresh client gets from url now (or the error's name)."""
    import requests

    if not url:
        return "no URL"
    try:
        r = requests.post(url, data=c.PREDICT_BODY, headers=c.JSON_HEADERS, timeout=10)
        return r.json()["predictions"] if r.status_code == 200 else f"HTTP {r.status_code}"
    except requests.RequestException as e:
        return type(e).__name__


def _loop_during(url: str, update: Any) -> tuple[dict[str, Any], float, Any]:
    looper = Looper(url)
    looper.start()
    try:
        time.sleep(1.0)
        t0 = time.perf_counter()
        out = update()
        dt = time.perf_counter() - t0
        time.sleep(SETTLE_S)
    finally:
        looper.stop.set()
        looper.join(timeout=30)
    return looper.summary(t0), dt, out


def _latency(url_direct: str, url_relay: str) -> dict[str, list[float]]:
    import requests

    sessions = {"direct": requests.Session(), "relay": requests.Session()}
    urls = {"direct": url_direct, "relay": url_relay}
    lat: dict[str, list[float]] = {"direct": [], "relay": []}
    try:
        for k in ("direct", "relay"):
            for _ in range(WARMUP):
                sessions[k].post(urls[k], data=c.PREDICT_BODY, headers=c.JSON_HEADERS)
        for b in range(N_LAT // BLOCK):
            for k in ("direct", "relay") if b % 2 == 0 else ("relay", "direct"):
                s, u = sessions[k], urls[k]
                for _ in range(BLOCK):
                    t = time.perf_counter()
                    r = s.post(u, data=c.PREDICT_BODY, headers=c.JSON_HEADERS)
                    lat[k].append(time.perf_counter() - t)
                    if r.status_code != 200:
                        raise RuntimeError(f"{k}: HTTP {r.status_code}")
    finally:
        for s in sessions.values():
            s.close()
    return lat


def _ours(models: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    from zenml_model_deployers.flavors import get_deployer
    from zenml_model_deployers.flavors.mlflow.config import MLflowDeploymentConfig

    d = get_deployer("zmd-mlflow")
    name = "bench-update"
    svc = d.deploy(
        MLflowDeploymentConfig(deployment_name=name, model_uri=models["a"]), timeout=TIMEOUT
    )
    try:
        url = svc.prediction_url
        assert url and _probe(url) == [0]
        cfg_b = MLflowDeploymentConfig(deployment_name=name, model_uri=models["b"])
        summ, dt, svc2 = _loop_during(url, lambda: d.deploy(cfg_b, timeout=TIMEOUT))
        svc = svc2
        summ.update(
            update_s=dt,
            url_after=svc2.prediction_url,
            same_url=svc2.prediction_url == url,
            recorded_url_serves=_probe(url),
        )
        direct = f"http://127.0.0.1:{svc2.status.server_port}/invocations"
        lat = _latency(direct, url)
    finally:
        d.delete(d.find_deployment(name) or svc)
    return summ, lat


def _builtin(models: dict[str, str], continuous: bool) -> dict[str, Any]:
    from zenml.client import Client
    from zenml.integrations.mlflow.services.mlflow_deployment import (
        MLFlowDeploymentConfig,
        MLFlowDeploymentService,
    )

    bd = Client().active_stack.model_deployer
    tag = "cd" if continuous else "step"
    pids: list[int] = []

    def cfg(model: str) -> Any:
        return MLFlowDeploymentConfig(
            model_name=f"upd-{tag}",
            model_uri=model,
            pipeline_name="bench-update",
            pipeline_step_name=f"deploy-{tag}",
            timeout=TIMEOUT,
        )

    st = MLFlowDeploymentService.SERVICE_TYPE
    info: dict[str, Any] = {}
    first = bd.deploy_model(config=cfg(models["a"]), service_type=st, replace=True, timeout=TIMEOUT)
    pids.append(first.status.pid)
    url = first.prediction_url
    try:
        c.wait_prediction(url, [0], timeout=30)

        def update() -> Any:
            if continuous:
                return bd.deploy_model(
                    config=cfg(models["b"]),
                    service_type=st,
                    continuous_deployment_mode=True,
                    timeout=TIMEOUT,
                )
            # What mlflow_model_deployer_step does with a new model URI.
            existing = bd.find_model_server(
                pipeline_name="bench-update",
                pipeline_step_name=f"deploy-{tag}",
                model_name=f"upd-{tag}",
            )
            new = bd.deploy_model(
                replace=True, config=cfg(models["b"]), service_type=st, timeout=TIMEOUT
            )
            info["returned_old_service"] = any(e.uuid == new.uuid for e in existing)
            info["returned_model_uri"] = new.config.model_uri
            for e in existing:
                e.stop(TIMEOUT)
            return new

        summ, dt, new = _loop_during(url, update)
        pids.append(new.status.pid)
        summ.update(
            update_s=dt,
            url_after=new.prediction_url,
            same_url=new.prediction_url == url,
            recorded_url_serves=_probe(url),
            new_url_serves=_probe(new.prediction_url),
            **info,
        )
        return summ
    finally:
        for s in bd.find_model_server(
            pipeline_name="bench-update", pipeline_step_name=f"deploy-{tag}"
        ):
            pids.append(s.status.pid)
            try:
                bd.delete_model_server(s.uuid, timeout=30)
            except Exception as e:  # still end its processes below
                print(f"  built-in delete failed: {e}", file=sys.stderr)
        for pid in {p for p in pids if p}:
            c.terminate_tree(pid, timeout=10)


def _url_kept(r: dict[str, Any]) -> str:
    if r.get("returned_old_service"):
        return "no: `deploy_model` returned the old service, which the step then stopped"
    if r["same_url"]:
        return "yes"
    return f"no (new URL {r['url_after']}, serves {r.get('new_url_serves')})"


def run() -> dict[str, Any]:
    """Runs the benchmark (inside an isolated env) and returns its result."""
    root = c.isolated_env("update")
    models = c.build_models(root / "models")
    c.zmd_stack()
    c.builtin_stack()
    results: dict[str, Any] = {}
    errors: dict[str, str] = {}
    lat: dict[str, list[float]] = {}
    for kind in ("ours", "builtin-step", "builtin-cd"):
        try:
            if kind == "ours":
                results[kind], lat = _ours(models)
            else:
                results[kind] = _builtin(models, continuous=kind == "builtin-cd")
            print(f"  {kind}: {results[kind]}", file=sys.stderr, flush=True)
        except Exception as e:
            errors[kind] = f"{type(e).__name__}: {e}"[:300]
            print(f"  {kind} failed: {errors[kind]}", file=sys.stderr, flush=True)

    labels = {
        "ours": "ours (`deploy`, policy update)",
        "builtin-step": "built-in, as its step does (new service, then stop old)",
        "builtin-cd": "built-in, `continuous_deployment_mode=True` (delete, then create)",
    }
    rows = []
    for k, label in labels.items():
        r = results.get(k)
        if r is None:
            rows.append([label, *["not measured"] * 7, errors.get(k, "")])
            continue
        errs = ", ".join(f"{e} x{n}" for e, n in r["errors"].items()) or "-"
        rows.append(
            [
                label,
                r["total"],
                f"{r['failed']} ({errs})",
                f"{r['longest_failure_s']:.2f} s",
                f"{r['update_s']:.2f} s",
                "-" if r["first_new_after_s"] is None else f"{r['first_new_after_s']:.2f} s",
                _url_kept(r),
                "yes" if r["recorded_url_serves"] == [1] else f"no ({r['recorded_url_serves']})",
                r["old_after_new"],
            ]
        )
    lat_rows = []
    added = None
    if lat:
        for k in ("direct", "relay"):
            v = lat[k]
            lat_rows.append(
                [
                    "server's private port" if k == "direct" else "deployment URL (public port)",
                    len(v),
                    c.fmt_ms(c.percentile(v, 50)),
                    c.fmt_ms(c.percentile(v, 90)),
                ]
            )
        added = c.percentile(lat["relay"], 50) - c.percentile(lat["direct"], 50)
        added90 = c.percentile(lat["relay"], 90) - c.percentile(lat["direct"], 90)
        lat_rows.append(["added by the URL's path", "", c.fmt_ms(added), c.fmt_ms(added90)])
    ours = results.get("ours")
    return {
        "name": "update",
        "title": "Update under load, and relay overhead",
        "method": (
            "A client thread loops kept-alive POSTs (one `requests.Session`, 1 ms pause between "
            "requests) on the URL recorded at the first deploy, from 1 s before the update call "
            f"until {SETTLE_S:.0f} s after it returned. Model `a` predicts 0, model `b` predicts 1 "
            "(sklearn DummyClassifier, strategy constant). Failed = exception or non-200. The "
            "URL's overhead is measured on the updated deployment (made with the defaults: the "
            "direct data path, issue 28): 2000 POSTs to the server's private port vs 2000 "
            "through the deployment's URL, interleaved in blocks of 200, after 200 warm-up "
            "requests each."
        ),
        "tables": [
            {
                "caption": "Client looping on the recorded URL during an update a -> b",
                "headers": [
                    "variant",
                    "requests",
                    "failed",
                    "longest failure run",
                    "update call",
                    "first answer from b (after call start)",
                    "URL kept",
                    "recorded URL serves b after",
                    "answers from a after the first b",
                ],
                "rows": rows,
            },
            {
                "caption": "Relay overhead (same server, kept-alive POST /invocations)",
                "headers": ["path", "requests", "p50", "p90"],
                "rows": lat_rows,
            },
        ],
        "goals": [
            {
                "goal": "ours: 0 failed requests during an update",
                "value": "n/a" if ours is None else str(ours["failed"]),
                "met": None if ours is None else ours["failed"] == 0,
            },
            {
                "goal": "ours: recorded URL serves the new model after",
                "value": "n/a" if ours is None else str(ours["recorded_url_serves"]),
                "met": None if ours is None else ours["recorded_url_serves"] == [1],
            },
            {
                "goal": "the URL's path adds < 0.3 ms at p50",
                "value": c.fmt_ms(added) if added is not None else "n/a",
                "met": None if added is None else added < 0.0003,
            },
        ],
        "notes": [
            "The built-in keeps no URL across model versions by design: its step is meant to "
            "deploy a new service (new port) and stop the old one; continuous deployment mode deletes the "
            "old service before starting the new one (a gap with no server); that the new one "
            "got the same URL there is luck: ZenML takes the first free port from 8000, which "
            "the deleted service had just freed.",
            *(
                [
                    "Built-in, step way: `deploy_model(replace=True)` with the new model URI "
                    "returned the *old* service (serving model a) instead of deploying b: ZenML "
                    "0.98's `find_model_server(config=...)` ignores `config` (it is in "
                    "`ServiceFilter.FILTER_EXCLUDE_FIELDS`), so any existing `mlflow` service "
                    "matches and is returned as 'the same configuration'. The step then stops "
                    "the services it found, i.e. that one: after the update nothing serves."
                ]
                if (results.get("builtin-step") or {}).get("returned_old_service")
                else []
            ),
            *(
                [
                    f"Ours: traffic moved to b {ours['first_new_after_s']:.2f} s into the update "
                    f"call, which returned at {ours['update_s']:.2f} s: the rest is retiring the "
                    "old server (relay drain, then `ProcessHandle.terminate`, which waits for "
                    "the old processes' exit, polling every 20 ms)."
                ]
                if ours and ours["first_new_after_s"] is not None
                else []
            ),
            *(f"{k} not measured: {v}" for k, v in errors.items()),
        ],
        "data": {"results": results, "added_p50_s": added},
    }


if __name__ == "__main__":
    c.main_for("update", run)

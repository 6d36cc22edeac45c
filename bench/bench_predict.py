"""``service.predict(list)`` vs a raw kept-alive ``requests.Session().post`` with the same body.

Ours: one `zmd-mlflow` deployment; ``svc.predict([[1.0, 2.0]])`` vs
``session.post(svc.prediction_url, data=body, headers=...)`` where ``body`` is exactly the bytes
``predict`` sends. 1000 calls each after 100 warm-up calls each, interleaved in blocks of 100;
medians (and p90).

Built-in: ZenML's ``MLFlowDeploymentService.predict(np.ndarray)`` on a service deployed with
``MLFlowModelDeployer.deploy_model``, same protocol; its raw kept-alive POST for reference.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as c  # noqa: E402

N = 1000
BLOCK = 100
WARMUP = 100
TIMEOUT = 120


def _compare(
    fn_a: Any, fn_b: Any, n: int = N, block: int = BLOCK, warmup: int = WARMUP
) -> tuple[list[float], list[float]]:
    for _ in range(warmup):
        fn_a()
        fn_b()
    a: list[float] = []
    b: list[float] = []
    for i in range(n // block):
        first, second = ((fn_a, a), (fn_b, b)) if i % 2 == 0 else ((fn_b, b), (fn_a, a))
        for fn, out in (first, second):
            out.extend(c.timed_calls(fn, block))
    return a, b


def _ours(models: dict[str, str]) -> dict[str, list[float]]:
    import requests

    from zenml_model_deployers.flavors import get_deployer
    from zenml_model_deployers.flavors.mlflow.config import MLflowDeploymentConfig

    d = get_deployer("zmd-mlflow")
    svc = d.deploy(
        MLflowDeploymentConfig(deployment_name="bench-predict", model_uri=models["a"]),
        timeout=TIMEOUT,
    )
    try:
        url = svc.prediction_url
        data = [[1.0, 2.0]]
        headers, body = svc.format_request(data)
        assert body == c.PREDICT_BODY, body
        assert svc.predict(data) == [0]
        session = requests.Session()
        try:

            def raw() -> Any:
                r = session.post(url, data=body, headers=headers, timeout=60)
                assert r.status_code == 200
                return r

            def ours() -> Any:
                return svc.predict(data)

            t_ours, t_raw = _compare(ours, raw)
        finally:
            session.close()
    finally:
        d.delete(svc)
    return {"ours": t_ours, "raw": t_raw}


def _builtin(models: dict[str, str]) -> dict[str, list[float]]:
    import numpy as np
    import requests
    from zenml.client import Client
    from zenml.integrations.mlflow.services.mlflow_deployment import (
        MLFlowDeploymentConfig,
        MLFlowDeploymentService,
    )

    bd = Client().active_stack.model_deployer
    cfg = MLFlowDeploymentConfig(
        model_name="bench-predict",
        model_uri=models["a"],
        pipeline_name="bench-predict",
        pipeline_step_name="deploy",
        timeout=TIMEOUT,
    )
    svc = bd.deploy_model(
        config=cfg, service_type=MLFlowDeploymentService.SERVICE_TYPE, timeout=TIMEOUT
    )
    pid = svc.status.pid
    try:
        url = svc.prediction_url
        c.wait_prediction(url, [0], timeout=30)
        x = np.array([[1.0, 2.0]])
        assert list(svc.predict(x)) == [0]
        session = requests.Session()
        try:

            def raw() -> Any:
                r = session.post(url, data=c.PREDICT_BODY, headers=c.JSON_HEADERS, timeout=60)
                assert r.status_code == 200
                return r

            def builtin() -> Any:
                return svc.predict(x)

            t_b, t_raw = _compare(builtin, raw)
        finally:
            session.close()
    finally:
        try:
            bd.delete_model_server(svc.uuid, timeout=30)
        finally:
            if pid:
                c.terminate_tree(pid, timeout=10)
    return {"builtin": t_b, "raw": t_raw}


def run() -> dict[str, Any]:
    """Runs the benchmark (inside an isolated env) and returns its result."""
    root = c.isolated_env("predict")
    models = c.build_models(root / "models")
    c.zmd_stack()
    c.builtin_stack()
    ours = _ours(models)
    builtin: dict[str, list[float]] = {}
    builtin_error = ""
    try:
        builtin = _builtin(models)
    except Exception as e:
        builtin_error = f"{type(e).__name__}: {e}"[:300]
        print(f"  built-in failed: {builtin_error}", file=sys.stderr)

    m_ours, m_raw = c.median(ours["ours"]), c.median(ours["raw"])
    ratio = m_ours / m_raw
    rows = [
        [
            "ours: `svc.predict([[1.0, 2.0]])`",
            len(ours["ours"]),
            c.fmt_ms(m_ours),
            c.fmt_ms(c.percentile(ours["ours"], 90)),
            c.fmt_ratio(ratio),
        ],
        [
            "raw kept-alive `Session.post` (same URL, same body)",
            len(ours["raw"]),
            c.fmt_ms(m_raw),
            c.fmt_ms(c.percentile(ours["raw"], 90)),
            "1.00x",
        ],
    ]
    b_ratio = None
    if builtin:
        m_b, m_braw = c.median(builtin["builtin"]), c.median(builtin["raw"])
        b_ratio = m_b / m_braw
        rows += [
            [
                "built-in: `MLFlowDeploymentService.predict(np.array)`",
                len(builtin["builtin"]),
                c.fmt_ms(m_b),
                c.fmt_ms(c.percentile(builtin["builtin"], 90)),
                f"{c.fmt_ratio(b_ratio)} (of its raw)",
            ],
            [
                "raw kept-alive `Session.post` to the built-in's URL",
                len(builtin["raw"]),
                c.fmt_ms(m_braw),
                c.fmt_ms(c.percentile(builtin["raw"], 90)),
                "1.00x",
            ],
        ]
    else:
        rows.append(["built-in", "not measured", builtin_error, "", ""])
    print(f"ratio ours/raw: {c.fmt_ratio(ratio)}", file=sys.stderr)
    return {
        "name": "predict",
        "title": "Predict: `service.predict` vs raw kept-alive POST",
        "method": (
            f"{N} calls each after {WARMUP} warm-up calls each, interleaved in blocks of {BLOCK}; "
            "one running server per variant; the raw client sends exactly the body `predict` "
            'sends (`{"inputs": [[1.0, 2.0]]}`). Ours goes through the relay (the recorded URL).'
        ),
        "tables": [
            {
                "caption": "Latency per call",
                "headers": ["client", "calls", "median", "p90", "ratio to raw"],
                "rows": rows,
            }
        ],
        "goals": [
            {
                "goal": "ours <= 1.1x raw kept-alive POST",
                "value": c.fmt_ratio(ratio),
                "met": ratio <= 1.1,
            }
        ],
        "notes": [
            "The built-in's `predict` checks `is_running` first (a status update plus an HTTP "
            "health request), then POSTs with `requests.post` (a new connection per call).",
        ],
        "data": {"ratio": ratio, "builtin_ratio": b_ratio},
    }


if __name__ == "__main__":
    c.main_for("predict", run)

"""The relay's weighted routing and per-revision metrics, against plain HTTP servers (fast)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families
from relay_support import KEY, Backend, StartRelay, start_relay  # noqa: F401

from zenml_model_deployers.local.launch import free_port
from zenml_model_deployers.local.service import metrics_from_reply


def _failing_server() -> ThreadingHTTPServer:
    """Answers 500 on every second request."""
    count = [0]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            count[0] += 1
            status = 500 if count[0] % 2 == 0 else 200
            body = json.dumps({"answer": "bad"}).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def _scrape(tmp_path: Path, path: str = "/metrics") -> requests.Response:
    info = json.loads((tmp_path / "ready-0.json").read_text())
    return requests.get(f"http://127.0.0.1:{info['metrics_port']}{path}", timeout=5)


def test_split_routes_exact_shares_and_counts_per_revision(
    start_relay: StartRelay,  # noqa: F811
    tmp_path: Path,
) -> None:
    r = start_relay("--deployment", "dep-a")
    old = r.backends[0]
    new = Backend("new")
    r.backends.append(new)
    split = {"cmd": "split", "port": old.port, "candidate": new.port, "percent": 20}
    assert r.control({**split, "revision": "aaa", "candidate_revision": "bbb"})["ok"]
    s = requests.Session()
    answers = [
        s.post(r.url + "/invocations", json={}, timeout=5).json()["answer"] for _ in range(100)
    ]
    # Per request, on one kept-alive connection: exactly 20 of every 100.
    assert answers.count("new") == 20
    assert r.control({"cmd": "status"})["candidate_percent"] == 20

    reply = r.control({"cmd": "metrics", "window": 60})
    m = metrics_from_reply(reply, windowed=True)
    assert (m["aaa"].requests, m["bbb"].requests) == (80, 20)
    assert m["aaa"].errors == 0 and m["aaa"].latency_p95_ms is not None
    assert 0 < m["aaa"].latency_p50_ms <= m["aaa"].latency_p95_ms < 1000  # type: ignore[operator]

    # The same counters in Prometheus format, on a port of their own.
    resp = _scrape(tmp_path)
    assert resp.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(resp.text)}
    reqs = {s.labels["revision"]: s.value for s in families["zmd_relay_requests"].samples}
    assert reqs == {"aaa": 80.0, "bbb": 20.0}
    counts = [
        s
        for s in families["zmd_relay_request_duration_seconds"].samples
        if s.name.endswith("_count") and s.labels["revision"] == "bbb"
    ]
    assert counts[0].value == 20 and counts[0].labels["deployment"] == "dep-a"
    # Only /metrics: the model server's routes are never shadowed (they are on another port).
    assert _scrape(tmp_path, "/invocations").status_code == 404

    # Back to the stable revision only: the candidate gets nothing more.
    assert r.control({"cmd": "switch", "port": old.port, "revision": "aaa"})["ok"]
    after = [s.post(r.url + "/x", json={}, timeout=5).json()["answer"] for _ in range(20)]
    assert set(after) == {"old"}


def test_errors_counted_by_kind(start_relay: StartRelay) -> None:  # noqa: F811
    r = start_relay()
    old = r.backends[0]
    bad = _failing_server()
    try:
        split = {"cmd": "split", "port": old.port, "candidate": bad.server_address[1]}
        assert r.control({**split, "percent": 50, "revision": "ok", "candidate_revision": "bad"})[
            "ok"
        ]
        s = requests.Session()
        codes = [s.post(r.url + "/invocations", json={}, timeout=5).status_code for _ in range(40)]
        assert codes.count(500) == 10  # half of the candidate's 20
        # A candidate whose server is gone: its requests are refused (503) and counted.
        dead = free_port()
        assert r.control({"cmd": "split", "port": old.port, "candidate": dead, "percent": 50})["ok"]
        for _ in range(4):
            requests.post(r.url + "/invocations", json={}, timeout=5)
        m = metrics_from_reply(r.control({"cmd": "metrics"}), windowed=False)
        assert m["bad"].errors_by_kind["5xx"] == 10 and m["bad"].requests == 20
        assert m["bad"].error_rate == 0.5
        assert m[f"port-{dead}"].errors_by_kind["refused"] == 2
        assert m["ok"].errors == 0
    finally:
        assert r.control({"cmd": "switch", "port": old.port})["ok"]
        bad.shutdown()
        bad.server_close()

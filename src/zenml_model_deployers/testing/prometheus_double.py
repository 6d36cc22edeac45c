"""A Prometheus double: it really scrapes ``/metrics`` targets (the simulated cluster's
MLServer) and answers ``/api/v1/query`` like Prometheus for the PromQL shapes
:mod:`zenml_model_deployers.kube.prometheus` sends, parsed strictly:

    expr     := "sum" ["by" "(" labels ")"] "(" inner ")"
              | "histogram_quantile" "(" number "," expr ")"
    inner    := selector | ("increase" | "rate") "(" selector "[" N "s" "]" ")"
    selector := metric "{" label ("=" | "=~") "string" {"," ...} "}"

Anything else is a 400 ``bad_data`` as Prometheus answers a parse error. Like Prometheus:
scraped series get ``job``/``instance`` labels, a series missing from its target's last scrape
is stale (absent from instant queries), ``sum`` over nothing is an empty result, ``increase``
needs two samples in its range (and handles counter resets, without extrapolation), and
``histogram_quantile`` interpolates linearly within a bucket. Faults: :meth:`fail_next`
(e.g. 503 ``unavailable``), :meth:`close` (unreachable).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

Labels = frozenset[tuple[str, str]]
Vector = list[tuple[dict[str, str], float]]

_TOKEN = re.compile(
    r'\s*(?:(?P<num>[0-9]+(?:\.[0-9]+)?)|(?P<str>"(?:[^"\\]|\\.)*")|(?P<op>=~|=|[(){}\[\],])'
    r"|(?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*))"
)


class PromQLError(ValueError):
    """A query this double (and so the code under test) does not speak."""


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        text = text.strip()
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None or m.end() == pos:
                raise PromQLError(f"unexpected character at position {pos}: {text[pos:]!r}")
            kind = m.lastgroup or ""
            self.tokens.append((kind, m.group(kind)))
            pos = m.end()
        self.i = 0

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.i] if self.i < len(self.tokens) else ("eof", "")

    def take(self, kind: str, value: str | None = None) -> str:
        k, v = self.peek()
        if k != kind or (value is not None and v != value):
            want = value or kind
            raise PromQLError(f"unexpected {v or 'end of input'!r}, expected {want!r}")
        self.i += 1
        return v

    def parse(self) -> dict[str, Any]:
        node = self.expr()
        if self.peek()[0] != "eof":
            raise PromQLError(f"unexpected {self.peek()[1]!r} after the expression")
        return node

    def expr(self) -> dict[str, Any]:
        name = self.take("ident")
        if name == "histogram_quantile":
            self.take("op", "(")
            q = float(self.take("num"))
            self.take("op", ",")
            inner = self.expr()
            self.take("op", ")")
            return {"op": "quantile", "q": q, "arg": inner}
        if name != "sum":
            raise PromQLError(f"unsupported function or aggregation {name!r}")
        by: list[str] = []
        if self.peek() == ("ident", "by"):
            self.take("ident")
            self.take("op", "(")
            by.append(self.take("ident"))
            while self.peek() == ("op", ","):
                self.take("op")
                by.append(self.take("ident"))
            self.take("op", ")")
        self.take("op", "(")
        inner = self.inner()
        self.take("op", ")")
        return {"op": "sum", "by": by, "arg": inner}

    def inner(self) -> dict[str, Any]:
        name = self.take("ident")
        if name in ("increase", "rate"):
            self.take("op", "(")
            sel = self.selector(self.take("ident"))
            self.take("op", "[")
            seconds = float(self.take("num"))
            if self.take("ident") != "s":
                raise PromQLError("only ranges in seconds are supported")
            self.take("op", "]")
            self.take("op", ")")
            return {"op": name, "sel": sel, "range": seconds}
        return {"op": "select", "sel": self.selector(name)}

    def selector(self, metric: str) -> dict[str, Any]:
        matchers = []
        self.take("op", "{")
        while True:
            label = self.take("ident")
            k, op = self.peek()
            if op not in ("=", "=~"):
                raise PromQLError(f"unexpected {op!r} in label matching, expected '=' or '=~'")
            self.take("op")
            value = json.loads(self.take("str"))
            if op == "=~":
                try:
                    matchers.append((label, re.compile(f"^(?:{value})$")))
                except re.error as e:
                    raise PromQLError(f"invalid regular expression {value!r}: {e}") from None
            else:
                matchers.append((label, value))
            if self.peek() == ("op", "}"):
                break
            self.take("op", ",")
        self.take("op", "}")
        return {"metric": metric, "matchers": matchers}


class PrometheusDouble:
    """Scrapes targets every ``scrape_interval`` seconds and serves the query API.

    Attributes:
        url: the API's base URL (``http://127.0.0.1:<port>``).
        queries: every query received (for tests' assertions).
        scrapes: completed scrape rounds.
    """

    def __init__(
        self,
        targets: list[str],
        scrape_interval: float = 0.2,
        retention: float = 300.0,
        token: str | None = None,
    ) -> None:
        """Starts scraping and serving.

        Args:
            targets: ``/metrics`` URLs.
            scrape_interval: seconds between scrapes.
            retention: seconds of samples kept.
            token: a bearer token the API requires (None: none).
        """
        self.targets = list(targets)
        self.scrape_interval = scrape_interval
        self.retention = retention
        self.token = token
        self.queries: list[str] = []
        self.scrapes = 0
        self._series: dict[tuple[str, Labels], deque[tuple[float, float]]] = {}
        self._fresh: set[tuple[str, Labels]] = set()
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._faults: deque[tuple[int, str, str]] = deque()
        double = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _query(self, params: dict[str, list[str]]) -> None:
                code, body = double.answer(
                    urlparse(self.path).path,
                    (params.get("query") or [""])[0],
                    self.headers.get("Authorization", ""),
                )
                raw = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self) -> None:  # noqa: N802 - http.server's API
                self._query(parse_qs(urlparse(self.path).query))

            def do_POST(self) -> None:  # noqa: N802 - http.server's API
                n = int(self.headers.get("Content-Length") or 0)
                self._query(parse_qs(self.rfile.read(n).decode()))

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._threads = [
            threading.Thread(target=self._server.serve_forever, daemon=True),
            threading.Thread(target=self._scrape_forever, daemon=True),
        ]
        for t in self._threads:
            t.start()

    def __enter__(self) -> PrometheusDouble:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stops scraping and serving (the URL refuses connections afterwards)."""
        self._halt.set()
        self._server.shutdown()
        self._server.server_close()

    def fail_next(
        self,
        n: int,
        status: int = 503,
        error_type: str = "unavailable",
        error: str = "Service Unavailable",
    ) -> None:
        """Answers the next ``n`` queries with an error, as Prometheus does when overloaded.

        Args:
            n: how many queries.
            status: HTTP status.
            error_type: Prometheus' ``errorType``.
            error: Prometheus' ``error``.
        """
        with self._lock:
            self._faults.extend([(status, error_type, error)] * n)

    def wait_for_scrape(self, timeout: float = 5.0) -> None:
        """Returns after the next complete scrape round (what was served before it is in).

        Args:
            timeout: seconds.
        """
        start = self.scrapes
        deadline = time.monotonic() + timeout
        while self.scrapes < start + 2 and time.monotonic() < deadline:
            time.sleep(0.02)

    # ----------------------------------------------------------------- scraping
    def _scrape_forever(self) -> None:
        while not self._halt.is_set():
            for target in self.targets:
                with contextlib.suppress(Exception):
                    self._scrape(target)
            self.scrapes += 1
            self._halt.wait(self.scrape_interval)

    def _scrape(self, target: str) -> None:
        import requests
        from prometheus_client.parser import text_string_to_metric_families

        text = requests.get(target, timeout=2).text
        now = time.time()
        instance = urlparse(target).netloc
        seen = set()
        with self._lock:
            for family in text_string_to_metric_families(text):
                for s in family.samples:
                    labels = {**s.labels, "job": "mlserver", "instance": instance}
                    key = (s.name, frozenset(labels.items()))
                    seen.add(key)
                    buf = self._series.setdefault(key, deque())
                    buf.append((now, float(s.value)))
                    while buf and buf[0][0] < now - self.retention:
                        buf.popleft()
            stale = {k for k in self._fresh if dict(k[1]).get("instance") == instance} - seen
            self._fresh = (self._fresh - stale) | seen

    # ----------------------------------------------------------------- queries
    def answer(self, path: str, query: str, authorization: str) -> tuple[int, dict[str, Any]]:
        """One API request.

        Args:
            path: the request path.
            query: the ``query`` parameter.
            authorization: the Authorization header.

        Returns:
            (status, JSON body).
        """
        if path != "/api/v1/query":
            return 404, {"status": "error", "errorType": "not_found", "error": "not found"}
        if self.token and authorization != f"Bearer {self.token}":
            return 401, {"status": "error", "errorType": "unauthorized", "error": "Unauthorized"}
        with self._lock:
            self.queries.append(query)
            fault = self._faults.popleft() if self._faults else None
        if fault is not None:
            return fault[0], {"status": "error", "errorType": fault[1], "error": fault[2]}
        try:
            node = _Parser(query).parse()
            now = time.time()
            vector = self._eval(node, now)
        except PromQLError as e:
            return 400, {"status": "error", "errorType": "bad_data", "error": f"parse error: {e}"}
        result = [
            {"metric": labels, "value": [round(now, 3), _fmt(value)]} for labels, value in vector
        ]
        return 200, {"status": "success", "data": {"resultType": "vector", "result": result}}

    def _select(
        self, sel: dict[str, Any]
    ) -> list[tuple[dict[str, str], deque[tuple[float, float]]]]:
        out = []
        with self._lock:
            for (name, labels), buf in self._series.items():
                if name != sel["metric"] or (name, labels) not in self._fresh:
                    continue
                d = dict(labels)
                if all(
                    (m.match(d.get(k, "")) if isinstance(m, re.Pattern) else d.get(k, "") == m)
                    for k, m in sel["matchers"]
                ):
                    out.append((d, deque(buf)))
        return out

    def _eval(self, node: dict[str, Any], now: float) -> Vector:
        op = node["op"]
        if op == "select":
            return [(d, buf[-1][1]) for d, buf in self._select(node["sel"]) if buf]
        if op in ("increase", "rate"):
            out = []
            for d, buf in self._select(node["sel"]):
                pts = [v for t, v in buf if t > now - node["range"]]
                if len(pts) < 2:
                    continue
                inc = sum(b - a if b >= a else b for a, b in zip(pts, pts[1:], strict=False))
                out.append((d, inc if op == "increase" else inc / node["range"]))
            return out
        if op == "sum":
            groups: dict[tuple[tuple[str, str], ...], float] = {}
            for d, v in self._eval(node["arg"], now):
                key = tuple((k, d[k]) for k in node["by"] if k in d)
                groups[key] = groups.get(key, 0.0) + v
            return [(dict(k), v) for k, v in groups.items()]
        # histogram_quantile
        by_group: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
        for d, v in self._eval(node["arg"], now):
            le = d.get("le")
            if le is None:
                continue
            key = tuple(sorted((k, x) for k, x in d.items() if k != "le"))
            by_group.setdefault(key, []).append((math.inf if le == "+Inf" else float(le), v))
        return [(dict(k), _quantile(node["q"], sorted(b))) for k, b in by_group.items()]


def _quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    if not buckets or not math.isinf(buckets[-1][0]):
        return math.nan
    total = buckets[-1][1]
    if total <= 0:
        return math.nan
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return prev_bound
            if count == prev_count:
                return bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = bound, count
    return prev_bound


def _fmt(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    return repr(v) if not math.isinf(v) else ("+Inf" if v > 0 else "-Inf")

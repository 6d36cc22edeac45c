"""The relay's request metrics per revision: counted on the data path, served in Prometheus format.

On the direct data path (``data_path="direct"``) the serving server counts its own requests
(prometheus_client's multiprocess files, ``local/metering.py``); the relay reads those
files beside its own counters (:func:`read_multiproc`), so every reader sees one set of series.

The data path only adds to plain integers (a request, an error by kind, a histogram bucket);
``prometheus_client`` builds the exposition from them at scrape time (a custom collector), so a
scrape costs the data path nothing and the library is imported only when someone scrapes.

Every ``SNAPSHOT_EVERY`` seconds the counters are copied into a ring covering ``HISTORY``
seconds; :meth:`Metrics.window` returns the counters now and as they were a window ago, from
which a reader derives the window's rate, error rate and percentiles (``service.RevisionMetrics``).

Only the standard library is imported at module level (the relay must start quickly).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections import deque
from pathlib import Path
from typing import Any

# Upper bounds of the latency histogram (seconds; time to the first response byte). The
# last bucket (+Inf) is implicit: len(buckets) == len(BOUNDS) + 1.
BOUNDS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
ERROR_KINDS = ("5xx", "refused", "reset", "abandoned")
SNAPSHOT_EVERY = 2.0
HISTORY = 900.0


class RevisionStats:
    """Counters of one revision (cumulative since the relay started)."""

    __slots__ = ("requests", "errors", "buckets", "lat_sum")

    def __init__(self) -> None:
        self.requests = 0  # answered requests (any status)
        self.errors: dict[str, int] = dict.fromkeys(ERROR_KINDS, 0)
        self.buckets = [0] * (len(BOUNDS) + 1)  # per bucket, not cumulative
        self.lat_sum = 0.0

    def error(self, kind: str) -> None:
        """Counts one failed request of `kind` (see ERROR_KINDS)."""
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        """The counters as JSON (histogram cumulative, Prometheus style)."""
        cum, total = [], 0
        for n in self.buckets:
            total += n
            cum.append(total)
        return {
            "requests": self.requests,
            "errors": dict(self.errors),
            "buckets": cum,
            "latency_sum": self.lat_sum,
        }


class Metrics:
    """The relay's counters, keyed by revision label (a server's port until one is given)."""

    def __init__(self, deployment: str = "", multiproc_root: Path | None = None) -> None:
        """Creates empty counters.

        Args:
            deployment: the deployment's name (a label on every series).
            multiproc_root: where direct-data-path servers count their own requests (one
                prometheus_client multiprocess folder per revision; see :func:`read_multiproc`).
        """
        self.deployment = deployment
        self.multiproc_root = multiproc_root
        self.labels: dict[int, str] = {}
        self.stats: dict[str, RevisionStats] = {}
        self.by_port: dict[int, RevisionStats] = {}
        now = time.monotonic()
        self.history: deque[tuple[float, dict[str, dict[str, Any]]]] = deque(
            [(now, {})], maxlen=int(HISTORY / SNAPSHOT_EVERY) + 1
        )
        self._next = now + SNAPSHOT_EVERY

    def label(self, port: int, revision: str) -> None:
        """Names the revision a server port serves (its counters are kept under that name).

        Args:
            port: the server's private port.
            revision: the revision's label (its config hash).
        """
        self.labels[port] = revision
        self.by_port.pop(port, None)

    def stats_for(self, port: int) -> RevisionStats:
        """The counters of the revision behind `port`.

        Args:
            port: a server's private port.

        Returns:
            Its (shared, mutable) counters.
        """
        st = self.by_port.get(port)
        if st is None:
            name = self.labels.get(port, f"port-{port}")
            st = self.stats.setdefault(name, RevisionStats())
            self.by_port[port] = st
        return st

    def tick(self, now: float) -> None:
        """Takes a snapshot when one is due (called by the relay's sweep).

        Args:
            now: time.monotonic().
        """
        if now >= self._next:
            self._next = now + SNAPSHOT_EVERY
            self.history.append((now, self._snapshot()))

    def _snapshot(self) -> dict[str, dict[str, Any]]:
        snap = {name: st.snapshot() for name, st in list(self.stats.items())}
        if self.multiproc_root is not None:
            for name, counted in read_multiproc(self.multiproc_root).items():
                snap[name] = add_counters(snap[name], counted) if name in snap else counted
        return snap

    def fold(self, keep: str) -> list[str]:
        """Takes the counts of retired direct servers into the relay's own counters and removes
        their multiprocess folders (every revision's but ``keep``'s, which still serves).

        Args:
            keep: the revision whose server may still count ("" for none).

        Returns:
            The revisions folded.
        """
        root = self.multiproc_root
        if root is None or not root.is_dir():
            return []
        done = []
        for sub in sorted(root.iterdir()):
            if sub.name == keep or not sub.is_dir():
                continue
            for name, counted in read_multiproc_dir(sub).items():
                st = self.stats.setdefault(name, RevisionStats())
                st.requests += int(counted["requests"])
                for kind, n in counted["errors"].items():
                    st.errors[kind] = st.errors.get(kind, 0) + int(n)
                prev = 0
                for i, c in enumerate(counted["buckets"]):
                    st.buckets[i] += int(c) - prev
                    prev = int(c)
                st.lat_sum += float(counted["latency_sum"])
                done.append(name)
            shutil.rmtree(sub, ignore_errors=True)
        return done

    def window(self, seconds: float) -> dict[str, Any]:
        """The counters now and at the oldest snapshot within the last `seconds`.

        Args:
            seconds: the window.

        Returns:
            ``{"now": {rev: counters}, "then": {rev: counters}, "span": seconds between them,
            "bounds": histogram upper bounds}``.
        """
        now = time.monotonic()
        then_t, then = self.history[-1]
        for t, snap in self.history:
            if t >= now - seconds:
                then_t, then = t, snap
                break
        return {
            "now": self._snapshot(),
            "then": then,
            "span": now - then_t,
            "bounds": list(BOUNDS),
        }

    # ----------------------------------------------------------------- Prometheus
    def collect(self) -> Any:
        """prometheus_client's collector protocol: the series of every revision.

        Yields:
            Metric families.
        """
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

        labels = ["deployment", "revision"]
        req = CounterMetricFamily(
            "zmd_relay_requests", "Requests answered, per revision.", labels=labels
        )
        err = CounterMetricFamily(
            "zmd_relay_errors",
            "Failed requests per revision: 5xx answers, refused connections, connections reset "
            "with a request in flight, requests abandoned by the client before any answer.",
            labels=[*labels, "kind"],
        )
        hist = HistogramMetricFamily(
            "zmd_relay_request_duration_seconds",
            "Time from the request to the first response byte, per revision.",
            labels=labels,
        )
        for name, snap in self._snapshot().items():
            lv = [self.deployment, name]
            req.add_metric(lv, snap["requests"])
            for kind, n in snap["errors"].items():
                err.add_metric([*lv, kind], n)
            bounds = [str(b) for b in BOUNDS] + ["+Inf"]
            hist.add_metric(
                lv, list(zip(bounds, snap["buckets"], strict=True)), snap["latency_sum"]
            )
        yield req
        yield err
        yield hist

    def exposition(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of these counters.

        Returns:
            (body, content type).
        """
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.exposition import CONTENT_TYPE_LATEST

        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        return generate_latest(registry), CONTENT_TYPE_LATEST

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answers ``GET /metrics`` (one request per connection; anything else: 404).

        Args:
            reader: client reader.
            writer: client writer.
        """
        try:
            async with asyncio.timeout(10):
                head = await reader.readuntil(b"\r\n\r\n")
            parts = head.split(b" ", 2)
            if (
                len(parts) == 3
                and parts[0] in (b"GET", b"HEAD")
                and parts[1]
                in (
                    b"/metrics",
                    b"/metrics/",
                )
            ):
                body, ctype = self.exposition()
                status = b"200 OK"
            else:
                body, ctype, status = b"not found: GET /metrics\n", "text/plain", b"404 Not Found"
            writer.write(
                b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                % (status, ctype.encode(), len(body))
            )
            if parts[0] != b"HEAD":
                writer.write(body)
            await writer.drain()
        except (ConnectionError, OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
            pass
        except asyncio.LimitOverrunError:
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()


# ----------------------------------------------------------------- direct-data-path servers
def read_multiproc_dir(path: Path) -> dict[str, dict[str, Any]]:
    """The counters a direct-data-path server's workers wrote to one prometheus_client
    multiprocess folder (``local/metering.py``), summed over its files, per revision
    label, in :meth:`RevisionStats.snapshot`'s form.

    Args:
        path: the folder.

    Returns:
        revision -> counters (empty without files).
    """
    files = [str(f) for f in path.glob("*.db")]
    if not files:
        return {}
    from prometheus_client.multiprocess import MultiProcessCollector

    out: dict[str, dict[str, Any]] = {}
    les: dict[str, dict[float, float]] = {}

    def rev(labels: dict[str, str]) -> dict[str, Any]:
        name = labels.get("revision", "")
        return out.setdefault(
            name,
            {
                "requests": 0,
                "errors": dict.fromkeys(ERROR_KINDS, 0),
                "buckets": [0] * (len(BOUNDS) + 1),
                "latency_sum": 0.0,
            },
        )

    try:
        families = MultiProcessCollector.merge(files, accumulate=True)  # type: ignore[no-untyped-call]
    except (OSError, ValueError, KeyError):  # a worker's file being created
        return {}
    for fam in families:
        for s in fam.samples:
            if s.name == "zmd_relay_requests_total":
                rev(s.labels)["requests"] += int(s.value)
            elif s.name == "zmd_relay_errors_total":
                errs = rev(s.labels)["errors"]
                errs[s.labels["kind"]] = errs.get(s.labels["kind"], 0) + int(s.value)
            elif s.name == "zmd_relay_request_duration_seconds_sum":
                rev(s.labels)["latency_sum"] += float(s.value)
            elif s.name == "zmd_relay_request_duration_seconds_bucket":
                rev(s.labels)
                les.setdefault(s.labels.get("revision", ""), {})[float(s.labels["le"])] = s.value
    for name, by_le in les.items():
        cum = [int(by_le.get(b, 0)) for b in BOUNDS] + [int(by_le.get(float("inf"), 0))]
        out[name]["buckets"] = cum
    return out


def read_multiproc(root: Path) -> dict[str, dict[str, Any]]:
    """:func:`read_multiproc_dir` over every revision folder under `root`.

    Args:
        root: the deployment's metrics folder.

    Returns:
        revision -> counters.
    """
    out: dict[str, dict[str, Any]] = {}
    with contextlib.suppress(OSError):
        for sub in sorted(root.iterdir()):
            if sub.is_dir():
                for name, counted in read_multiproc_dir(sub).items():
                    out[name] = add_counters(out[name], counted) if name in out else counted
    return out


def add_counters(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two revisions' counters (snapshot form) added.

    Args:
        a: counters.
        b: counters.

    Returns:
        Their sum.
    """
    errors = dict(a["errors"])
    for k, n in b["errors"].items():
        errors[k] = errors.get(k, 0) + n
    return {
        "requests": a["requests"] + b["requests"],
        "errors": errors,
        "buckets": [x + y for x, y in zip(a["buckets"], b["buckets"], strict=True)],
        "latency_sum": a["latency_sum"] + b["latency_sum"],
    }


# ----------------------------------------------------------------- reading (stdlib only)
def percentile(bounds: list[float], cumulative: list[int], q: float) -> float | None:
    """A latency percentile (seconds) from a cumulative histogram, linear within a bucket as
    Prometheus's ``histogram_quantile``; None without requests.

    Args:
        bounds: the buckets' upper bounds (+Inf implied).
        cumulative: cumulative counts per bound, then the +Inf bucket.
        q: 0-1.

    Returns:
        Seconds, or None.
    """
    if not cumulative or not cumulative[-1] or len(cumulative) != len(bounds) + 1:
        return None
    rank = q * cumulative[-1]
    prev_count, prev_bound = 0, 0.0
    for i, c in enumerate(cumulative):
        if c >= rank:
            if i == len(bounds):  # in +Inf: the last finite bound is all that is known
                return bounds[-1]
            inside = c - prev_count
            frac = (rank - prev_count) / inside if inside else 1.0
            return prev_bound + (bounds[i] - prev_bound) * frac
        prev_count = c
        if i < len(bounds):
            prev_bound = bounds[i]
    return bounds[-1]


def summarize(reply: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per revision, the window of a ``metrics`` reply: requests, req/s, error rate, p50/p95.

    What ``zmd models describe`` and ``zmd models list --stats`` show (without importing
    ZenML); the rollout computes the same from ``service.RevisionMetrics``.

    Args:
        reply: the relay's reply (``now``, ``then``, ``span``, ``bounds``).

    Returns:
        revision -> summary.
    """
    bounds = [float(b) for b in reply.get("bounds", [])]
    span = float(reply.get("span") or 0)
    out: dict[str, dict[str, Any]] = {}
    for rev, now in dict(reply.get("now", {})).items():
        then = dict(reply.get("then", {})).get(rev) or {}
        answered = int(now.get("requests", 0)) - int(then.get("requests", 0))
        kinds = {
            k: int(n) - int(dict(then.get("errors", {})).get(k, 0))
            for k, n in dict(now.get("errors", {})).items()
        }
        unanswered = sum(n for k, n in kinds.items() if k != "5xx")
        total = answered + unanswered
        b_now, b_then = list(now.get("buckets", [])), list(then.get("buckets", []))
        hist = [c - (b_then[i] if len(b_then) == len(b_now) else 0) for i, c in enumerate(b_now)]
        p50, p95 = percentile(bounds, hist, 0.5), percentile(bounds, hist, 0.95)
        out[rev] = {
            "requests": total,
            "errors": sum(kinds.values()),
            "req_per_s": round(total / span, 2) if span else None,
            "error_rate": round(sum(kinds.values()) / total, 4) if total else None,
            "p50_ms": None if p50 is None else round(p50 * 1000, 2),
            "p95_ms": None if p95 is None else round(p95 * 1000, 2),
            "window_s": round(span, 1),
        }
    return out

"""Request metrics of one revision (requests, errors, latency), as a backend counts them: what
canary gates and progressive rollouts decide on. Imports nothing of the package.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class RevisionMetrics(BaseModel):
    """Request metrics of one revision, as the backend counts them (for canary decisions).

    Counts are cumulative (since the revision was deployed, or since the backend started
    counting) unless ``window_s`` is set; :meth:`since` turns two readings into the window
    between them. Where the backend reports a latency histogram (the local relay), the
    percentiles of any window come from it.

    Attributes:
        config_hash: the revision.
        requests: requests it answered.
        errors: of those, failed ones (HTTP 5xx, or what the backend counts as an error).
        errors_by_kind: errors per kind, where the backend tells them apart (local relay:
            ``5xx``, ``refused``, ``reset``, ``abandoned``).
        latency_p50_ms: median latency, when the backend reports it.
        latency_p95_ms: 95th percentile latency, when the backend reports it.
        latency_bounds: upper bounds (seconds) of the latency histogram's buckets (+Inf implied).
        latency_counts: cumulative request counts per bound, then the +Inf bucket.
        window_s: the span these counts cover (None: cumulative).
    """

    config_hash: str
    requests: int = 0
    errors: int = 0
    errors_by_kind: dict[str, int] = Field(default_factory=dict)
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_bounds: list[float] = Field(default_factory=list)
    latency_counts: list[int] = Field(default_factory=list)
    window_s: float | None = None

    @property
    def error_rate(self) -> float | None:
        """Errors per request (errors that got no answer count as requests), None without any."""
        total = self.requests + self._unanswered()
        return self.errors / total if total else None

    @property
    def requests_per_s(self) -> float | None:
        """Request rate over the window (None for cumulative counts)."""
        if not self.window_s:
            return None
        return (self.requests + self._unanswered()) / self.window_s

    def _unanswered(self) -> int:
        # A refused, reset or abandoned request got no answer, so `requests` misses it.
        return sum(n for k, n in self.errors_by_kind.items() if k != "5xx")

    def percentile_ms(self, q: float) -> float | None:
        """A latency percentile from the histogram (linear within a bucket, as Prometheus's
        ``histogram_quantile``), or None without histogram or requests.

        Args:
            q: 0-1.

        Returns:
            Milliseconds.
        """
        from zenml_model_deployers.local.relay_metrics import percentile

        p = percentile(self.latency_bounds, self.latency_counts, q)
        return None if p is None else p * 1000

    def since(self, earlier: RevisionMetrics | None, window_s: float | None) -> RevisionMetrics:
        """The metrics of the window between an earlier reading and this one.

        Args:
            earlier: the earlier cumulative reading (None: nothing was counted before).
            window_s: seconds between the two readings.

        Returns:
            Windowed metrics (percentiles from the histogram difference; a backend without a
            histogram keeps the percentiles it reported).
        """
        e = earlier or RevisionMetrics(config_hash=self.config_hash)
        kinds = {k: max(0, n - e.errors_by_kind.get(k, 0)) for k, n in self.errors_by_kind.items()}
        out = RevisionMetrics(
            config_hash=self.config_hash,
            requests=max(0, self.requests - e.requests),
            errors=max(0, self.errors - e.errors),
            errors_by_kind=kinds,
            latency_p50_ms=self.latency_p50_ms,
            latency_p95_ms=self.latency_p95_ms,
            window_s=window_s,
        )
        if self.latency_counts:
            before = e.latency_counts if len(e.latency_counts) == len(self.latency_counts) else []
            out.latency_bounds = list(self.latency_bounds)
            out.latency_counts = [
                max(0, c - (before[i] if before else 0)) for i, c in enumerate(self.latency_counts)
            ]
            out.latency_p50_ms = out.percentile_ms(0.5)
            out.latency_p95_ms = out.percentile_ms(0.95)
        return out

    @classmethod
    def from_counters(
        cls, config_hash: str, counters: dict[str, Any], bounds: list[float]
    ) -> RevisionMetrics:
        """Builds a cumulative reading from the local relay's counters (``relay_metrics``).

        Args:
            config_hash: the revision.
            counters: ``{"requests", "errors": {kind: n}, "buckets": cumulative counts}``.
            bounds: the histogram's upper bounds.

        Returns:
            The metrics.
        """
        kinds = {str(k): int(v) for k, v in dict(counters.get("errors", {})).items()}
        m = cls(
            config_hash=config_hash,
            requests=int(counters.get("requests", 0)),
            errors=sum(kinds.values()),
            errors_by_kind=kinds,
            latency_bounds=list(bounds),
            latency_counts=[int(c) for c in counters.get("buckets", [])],
        )
        m.latency_p50_ms = m.percentile_ms(0.5)
        m.latency_p95_ms = m.percentile_ms(0.95)
        return m

    def summary(self) -> dict[str, Any]:
        """What the CLI shows: rate, error rate and percentiles (None where unknown).

        Returns:
            A JSON-able dict.
        """

        def r(x: float | None, n: int) -> float | None:
            return None if x is None else round(x, n)

        return {
            "requests": self.requests + self._unanswered(),
            "errors": self.errors,
            "req_per_s": r(self.requests_per_s, 2),
            "error_rate": r(self.error_rate, 4),
            "p50_ms": r(self.latency_p50_ms, 2),
            "p95_ms": r(self.latency_p95_ms, 2),
            "window_s": r(self.window_s, 1),
        }

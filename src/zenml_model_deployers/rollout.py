"""What a progressive rollout (``policy="canary"``) records: steps, gate values, verdict, and
its HTML view for the ZenML dashboard. The rollout itself runs in ``traffic.py``.
"""

from __future__ import annotations

import html
import time
from typing import Any, Literal

from pydantic import BaseModel, Field

from zenml_model_deployers.config import CanaryRollout
from zenml_model_deployers.metrics import RevisionMetrics


class GateResult(BaseModel):
    """One gate's verdict in one step.

    Attributes:
        gate: ``min_requests``, ``max_error_rate`` or ``max_p95_ratio``.
        value: the measured value (None: not measurable, e.g. no latency reported).
        limit: the gate's limit.
        passed: the verdict (None: skipped).
    """

    gate: str
    value: float | None
    limit: float
    passed: bool | None


class StepRecord(BaseModel):
    """One step of the rollout: the split, the bake, the metrics of both revisions, the gates.

    Attributes:
        percent: the candidate's share of requests.
        started_at: seconds since the rollout started.
        baked_s: how long the step baked.
        stable: the stable revision's metrics over the bake.
        candidate: the candidate's metrics over the bake.
        gates: the gates' verdicts.
        passed: whether every gate passed.
    """

    percent: int
    started_at: float
    baked_s: float = 0.0
    stable: RevisionMetrics | None = None
    candidate: RevisionMetrics | None = None
    gates: list[GateResult] = Field(default_factory=list)
    passed: bool = False


class RolloutRecord(BaseModel):
    """A progressive rollout as it happened (run metadata ``rollout``).

    Attributes:
        deployment: the deployment's name.
        flavor: its flavor.
        stable: the stable revision's config hash.
        candidate: the candidate's config hash.
        spec: the steps, interval and gates asked for.
        steps: the steps walked.
        verdict: ``promoted``, ``rolled_back`` or ``failed`` (the rollout itself broke).
        reason: why it was rolled back or failed.
        duration_s: the whole rollout.
        overhead_s: the time beyond the bake intervals (splits, readiness, promotion).
    """

    deployment: str
    flavor: str
    stable: str
    candidate: str
    spec: CanaryRollout
    steps: list[StepRecord] = Field(default_factory=list)
    verdict: Literal["running", "promoted", "rolled_back", "failed"] = "running"
    reason: str = ""
    duration_s: float = 0.0
    overhead_s: float = 0.0
    _t0: float = 0.0

    def model_post_init(self, context: Any) -> None:
        """Starts the rollout's clock."""
        self._t0 = time.monotonic()

    def elapsed(self) -> float:
        """Seconds since the rollout started."""
        return time.monotonic() - self._t0

    def finish(self, verdict: Literal["promoted", "rolled_back", "failed"], reason: str) -> None:
        """Records the verdict and the time spent beyond the bakes.

        Args:
            verdict: how it ended.
            reason: why (for a rollback or failure).
        """
        self.verdict = verdict
        self.reason = reason
        self.duration_s = round(self.elapsed(), 3)
        self.overhead_s = round(self.duration_s - sum(s.baked_s for s in self.steps), 3)

    def metadata(self) -> dict[str, Any]:
        """The run metadata (histogram buckets left out: percentiles are kept).

        Returns:
            A JSON-able dict.
        """
        return self.model_dump(
            mode="json",
            exclude={
                "steps": {
                    "__all__": {
                        "stable": {"latency_bounds", "latency_counts"},
                        "candidate": {"latency_bounds", "latency_counts"},
                    }
                }
            },
        )


def evaluate_gates(
    spec: CanaryRollout,
    candidate: RevisionMetrics,
    stable: RevisionMetrics | None,
    stable_p95_ref: float | None,
) -> list[GateResult]:
    """The gates' verdicts on one step's metrics (min requests first: without enough
    requests no other gate may pass).

    Args:
        spec: the rollout's gates.
        candidate: the candidate's metrics over the bake.
        stable: the stable revision's metrics over the bake.
        stable_p95_ref: the stable p95 to compare with (this step's, else the last known).

    Returns:
        The verdicts.
    """
    total = candidate.requests + sum(n for k, n in candidate.errors_by_kind.items() if k != "5xx")
    enough = total >= spec.min_requests
    out = [GateResult(gate="min_requests", value=total, limit=spec.min_requests, passed=enough)]
    rate = candidate.error_rate
    out.append(
        GateResult(
            gate="max_error_rate",
            value=rate,
            limit=spec.max_error_rate,
            passed=None if rate is None else rate <= spec.max_error_rate,
        )
    )
    ref = stable.latency_p95_ms if stable is not None and stable.requests else None
    ref = ref if ref is not None else stable_p95_ref
    p95 = candidate.latency_p95_ms
    ratio = p95 / ref if p95 is not None and ref else None
    out.append(
        GateResult(
            gate="max_p95_ratio",
            value=None if ratio is None else round(ratio, 3),
            limit=spec.max_p95_ratio,
            passed=None if ratio is None else ratio <= spec.max_p95_ratio,
        )
    )
    return out


def describe_gates(gates: list[GateResult]) -> str:
    """One line of gate values, e.g. ``requests 40 (>= 20) ok, error rate 0.0% (<= 1.0%) ok``.

    Args:
        gates: verdicts.

    Returns:
        The line.
    """
    parts = []
    for g in gates:
        word = {True: "ok", False: "FAILED", None: "not measured"}[g.passed]
        if g.gate == "min_requests":
            parts.append(f"requests {g.value:.0f} (>= {g.limit:.0f}) {word}")
        elif g.gate == "max_error_rate":
            v = "-" if g.value is None else f"{100 * g.value:.2f}%"
            parts.append(f"error rate {v} (<= {100 * g.limit:.2f}%) {word}")
        else:
            v = "-" if g.value is None else f"{g.value:.2f}x"
            parts.append(f"p95 {v} stable's (<= {g.limit:.2f}x) {word}")
    return ", ".join(parts)


def render_html(record: RolloutRecord) -> str:
    """The rollout as an HTML page (ZenML ``HTMLString``): the traffic share and each
    revision's error rate and p95 latency per step, as bars, with the gates and the verdict.

    Args:
        record: the rollout.

    Returns:
        HTML.
    """
    e = html.escape
    colour = {"promoted": "#1a7f37", "rolled_back": "#cf222e", "failed": "#cf222e"}.get(
        record.verdict, "#57606a"
    )

    def bar(frac: float, col: str) -> str:
        w = max(0.0, min(1.0, frac)) * 100
        return (
            f'<div style="background:#eaeef2;width:160px;height:10px;display:inline-block">'
            f'<div style="background:{col};width:{w:.1f}%;height:10px"></div></div>'
        )

    def fmt(x: float | None, unit: str = "", scale: float = 1.0, digits: int = 2) -> str:
        return "-" if x is None else f"{x * scale:.{digits}f}{unit}"

    rows = []
    max_p95 = (
        max(
            [
                m.latency_p95_ms or 0.0
                for s in record.steps
                for m in (s.stable, s.candidate)
                if m is not None
            ]
            or [1.0]
        )
        or 1.0
    )
    for i, s in enumerate(record.steps, 1):
        cand, stab = s.candidate, s.stable
        cells = [
            f"<td>{i}</td>",
            f"<td>{s.started_at:.1f} s</td>",
            f"<td>{bar(s.percent / 100, '#0969da')} {s.percent}%</td>",
        ]
        for m in (stab, cand):
            er = m.error_rate if m is not None else None
            p95 = m.latency_p95_ms if m is not None else None
            cells.append(
                f"<td>{m.requests if m else 0} req<br>{bar(er or 0.0, '#cf222e')} "
                f"{fmt(er, '%', 100)}<br>{bar((p95 or 0.0) / max_p95, '#8250df')} "
                f"p95 {fmt(p95, ' ms')}</td>"
            )
        gates = e(describe_gates(s.gates))
        verdict = "passed" if s.passed else "failed"
        cells.append(f"<td>{gates}<br><b>{verdict}</b></td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    spec = record.spec
    return (
        '<div style="font-family:sans-serif;font-size:13px">'
        f"<h3>Rollout of {e(record.deployment)} ({e(record.flavor)})</h3>"
        f"<p>stable <code>{e(record.stable)}</code> → candidate <code>{e(record.candidate)}</code>"
        f' · verdict <b style="color:{colour}">{e(record.verdict)}</b>'
        f"{' · ' + e(record.reason) if record.reason else ''}</p>"
        f"<p>steps {e(str(spec.steps))}, bake {spec.interval:g} s, gates: error rate ≤ "
        f"{100 * spec.max_error_rate:g}%, p95 ≤ {spec.max_p95_ratio:g}× stable, ≥ "
        f"{spec.min_requests} requests · took {record.duration_s:.1f} s "
        f"({record.overhead_s:.1f} s beyond the bakes)</p>"
        '<table cellpadding="6" style="border-collapse:collapse">'
        "<tr><th>step</th><th>at</th><th>candidate share</th><th>stable</th>"
        "<th>candidate</th><th>gates</th></tr>" + "".join(rows) + "</table></div>"
    )

"""TrafficController: canaries, promote, rollback and the progressive rollout, in one place.

After Flagger's canary scheduler: one loop walks a rollout's steps, and one method decides
whether a step promotes, continues or rolls back. The controller talks to a service through
its two traffic hooks only — ``set_traffic_split`` (serve the stable and a candidate revision,
each with its share of requests) and ``read_revision_metrics`` (request metrics per revision) —
plus the canary fields of its status. The deployer keeps the lifecycle around it (lock,
lookup, persistence); ``rollout.py`` holds the rollout's record and the gates.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Literal, Protocol
from uuid import UUID

from zenml.enums import ServiceState
from zenml.logger import get_logger

from zenml_model_deployers.config import (
    CanaryRollout,
    DeploymentConfig,
    DeployOptions,
    DeployPolicy,
)
from zenml_model_deployers.errors import ConfigurationError, DeploymentError, RolloutFailedError
from zenml_model_deployers.metrics import RevisionMetrics
from zenml_model_deployers.rollout import (
    GateResult,
    RolloutRecord,
    StepRecord,
    describe_gates,
    evaluate_gates,
)
from zenml_model_deployers.service import DeploymentService

logger = get_logger(__name__)


class Persist(Protocol):
    """Writes a service's state to the service store (``BaseDeployer.persist``)."""

    def __call__(
        self, service: DeploymentService, model_version_id: UUID | None = None
    ) -> None:  # pragma: no cover - a protocol
        """Persists ``service`` (re-linked to ``model_version_id`` when given)."""


def refuse_unsupported(
    service_class: type[DeploymentService], config: DeploymentConfig, opts: DeployOptions
) -> None:
    """Refuses a canary or progressive rollout that cannot run, before anything is looked
    up, started or changed.

    Args:
        service_class: the flavor's service class.
        config: the config to deploy.
        opts: the deploy's options.

    Raises:
        ConfigurationError: the flavor cannot split traffic (policy ``canary``), or the
            config bypasses the front that splits and measures requests.
    """
    name = config.deployment_name
    if opts.policy == DeployPolicy.CANARY and not service_class.SUPPORTS_TRAFFIC_SPLIT:
        raise ConfigurationError(
            f"Flavor {service_class.FLAVOR} cannot split traffic between two revisions, so "
            f"deployment '{name}' cannot be rolled out progressively (policy 'canary').",
            deployment_name=name,
            hint="deploy with policy 'update': the new revision replaces the old one only "
            "once it is ready, and a failed update is rolled back.",
        )
    wants_traffic = opts.policy == DeployPolicy.CANARY or opts.canary_percent is not None
    if wants_traffic and getattr(config, "data_path", "relay") == "direct":
        raise ConfigurationError(
            f"Deployment '{name}' asks for data_path='direct': requests "
            "bypass the front, which can neither split them between two revisions nor "
            "measure them, so no canary or progressive rollout can run.",
            deployment_name=name,
            hint="deploy with data_path='auto' (the default: the relay steps into the data "
            "path by itself for a canary or rollout) or 'relay'.",
        )


class TrafficController:
    """Moves a deployment's requests between its stable and a candidate revision.

    Guarantees: every change blocks until the backend serves the new split; a change that
    fails leaves the recorded split as it was and records why (``status.last_error``); a
    change that succeeds is persisted and clears an earlier error. Callers hold the
    deployment's lock.

    Args:
        persist: writes a service's state to the service store.
    """

    def __init__(self, persist: Persist) -> None:
        self._persist = persist

    # ----------------------------------------------------------------- canaries
    def canary(
        self,
        service: DeploymentService,
        config: DeploymentConfig,
        percent: int | None,
        timeout: float,
    ) -> DeploymentService:
        """Starts, re-applies or adjusts a canary of ``config`` with ``percent`` % of requests.

        Args:
            service: the deployment (serving its recorded revision, maybe a canary beside).
            config: the candidate revision.
            percent: its share, 1-99 (None: a plain deploy that met a canary in progress).
            timeout: seconds.

        Returns:
            The service, serving the split.

        Raises:
            ConfigurationError: another canary is in progress, the flavor cannot split, or the
                deployment is not serving (nothing changed).
        """
        name = service.deployment_name
        candidate = service.canary_candidate()
        new_hash = config.config_hash()
        if candidate is not None:
            if candidate.config_hash() != new_hash or percent is None:
                raise ConfigurationError(
                    f"Deployment '{name}' runs a canary of revision {candidate.config_hash()} "
                    f"({service.status.canary_percent}% of requests): a deploy of revision "
                    f"{new_hash}{' as a canary' if percent else ''} must wait "
                    "until it is finished.",
                    deployment_name=name,
                    hint=f"finish it first: `zmd models promote {name}` or "
                    f"`zmd models rollback {name}`.",
                )
            if percent == service.status.canary_percent:
                logger.info(
                    "Deployment '%s' already runs revision %s as a %s%% canary: reused.",
                    name,
                    new_hash,
                    percent,
                )
                return service
        assert percent is not None
        service.require_traffic_split()
        _require_serving(
            service, "a canary needs a serving revision beside it", "without canary_percent"
        )
        logger.info(
            "Deployment '%s': canary of revision %s with %s%% of requests (revision %s keeps "
            "%s%%).",
            name,
            new_hash,
            percent,
            service.status.config_hash,
            100 - percent,
        )
        self._split(
            service, service.config, config, percent, timeout, f"canary of {new_hash} at {percent}%"
        )
        return service

    def finish(
        self, service: DeploymentService, verdict: Literal["promote", "rollback"], timeout: float
    ) -> DeploymentService:
        """Ends a canary: ``promote`` sends all requests to the candidate, which becomes the
        recorded revision; ``rollback`` sends them back to the stable revision. Either way
        the other revision is retired, and on failure the canary split stays as it was.

        Args:
            service: the deployment running a canary.
            verdict: ``promote`` or ``rollback``.
            timeout: seconds.

        Returns:
            The service, serving one revision.

        Raises:
            ConfigurationError: no canary is in progress (nothing changed).
            DeploymentError: the backend failed; the canary split keeps serving.
        """
        candidate = service.canary_candidate()
        if candidate is None:
            verb = "promote" if verdict == "promote" else "roll back"
            raise ConfigurationError(
                f"Deployment '{service.deployment_name}' runs no canary: nothing to {verb}.",
                deployment_name=service.deployment_name,
                hint="start one by deploying a new revision with canary_percent=N.",
            )
        if verdict == "promote":
            self._promote(service, candidate, timeout)
        else:
            self._roll_back(
                service, service.config, timeout, f"rollback of {candidate.config_hash()}"
            )
        # Debug: the caller says it (the CLI prints one line), as for start and stop.
        logger.debug(
            "Deployment '%s' %s: revision %s serves all requests.",
            service.deployment_name,
            "promoted" if verdict == "promote" else "rolled back",
            service.status.config_hash,
        )
        return service

    # ----------------------------------------------------------------- progressive rollout
    def rollout(
        self,
        service: DeploymentService,
        config: DeploymentConfig,
        spec: CanaryRollout,
        timeout: float,
        model_version_id: UUID | None = None,
    ) -> DeploymentService:
        """Walks the rollout's steps (policy ``canary``): at each one the candidate gets its
        share of requests for the bake interval, then its metrics must pass every gate; the
        first failed gate rolls all traffic back, tears the candidate down and raises
        RolloutFailedError with the numbers; after the last step the candidate is promoted.

        The record (``service.last_rollout``) has every step's split, metrics and gates.

        Args:
            service: the serving deployment.
            config: the candidate revision.
            spec: steps, bake interval and gates.
            timeout: seconds for each split change.
            model_version_id: ZenML model version the promoted service is linked to.

        Returns:
            The service, serving the candidate.

        Raises:
            ConfigurationError: the deployment is not serving, or its backend cannot report
                per-revision metrics (nothing changed).
            RolloutFailedError: a gate failed: rolled back, the stable revision serves all
                requests, the candidate is gone.
            DeploymentError: the backend failed (its ``rollout`` attribute is the record).
        """
        name = service.deployment_name
        _require_serving(
            service,
            "a progressive rollout needs a serving revision to compare with",
            "with policy 'update'",
        )
        # A backend that cannot report per-revision metrics cannot judge a step: refused
        # before anything changes (ConfigurationError from the flavor). Metrics are read
        # where the new config (the component, now) says.
        service.adopt_metrics_settings(config)
        service.read_revision_metrics()
        stable = service.config
        record = RolloutRecord(
            deployment=name,
            flavor=service.FLAVOR,
            stable=service.status.config_hash,
            candidate=config.config_hash(),
            spec=spec,
        )
        service._rollout = record
        logger.info(
            "Rollout of '%s': revision %s -> %s in steps %s%%, %g s each (gates: error rate "
            "<= %g%%, p95 <= %gx stable, >= %d requests).",
            name,
            record.stable,
            record.candidate,
            spec.steps,
            spec.interval,
            100 * spec.max_error_rate,
            spec.max_p95_ratio,
            spec.min_requests,
        )
        try:
            for i, percent in enumerate(spec.steps, 1):
                # The step starts with its split change: its time counts as the step's.
                step = StepRecord(percent=percent, started_at=round(record.elapsed(), 3))
                record.steps.append(step)
                self._split(
                    service, stable, config, percent, timeout, f"rollout step {i} ({percent}%)"
                )
                self._bake(service, record, step, i)
                # The one decision, after each step: on, or all traffic back to stable.
                if not step.passed:
                    raise self._roll_back_failed_step(service, stable, record, step, i, timeout)
            self._promote(service, config, timeout)
        except RolloutFailedError:
            raise
        except BaseException as e:
            with contextlib.suppress(Exception):
                self._roll_back(service, stable, timeout, "rollback of the rollout")
            record.finish("failed", f"{type(e).__name__}: {e}"[:2000])
            if isinstance(e, DeploymentError):
                e.rollout = record  # type: ignore[attr-defined]
            raise
        record.finish("promoted", "")
        self._persist(service, model_version_id=model_version_id)
        logger.info(
            "Rollout of '%s' promoted revision %s after %d steps (%.1f s, %.1f s beyond the "
            "bakes).",
            name,
            record.candidate,
            len(spec.steps),
            record.duration_s,
            record.overhead_s,
        )
        return service

    def _bake(
        self, service: DeploymentService, record: RolloutRecord, step: StepRecord, i: int
    ) -> None:
        """Bakes step ``i`` (its split is set): measures both revisions until the gates can
        judge, and records their metrics and the verdict in ``step``."""
        spec = record.spec
        stable_p95 = _last_stable_p95(record)
        tick = max(0.2, min(5.0, spec.interval / 4))
        before = service.read_revision_metrics()
        t0 = time.monotonic()
        while True:
            time.sleep(tick)
            baked = time.monotonic() - t0
            now = service.read_revision_metrics()
            s_m = _window(now, before, record.stable, baked)
            c_m = _window(now, before, record.candidate, baked)
            gates = evaluate_gates(spec, c_m, s_m, stable_p95)
            logger.info(
                "Rollout of '%s' step %d/%d: %d%% of requests to %s, %.1f s of %g: %s.",
                record.deployment,
                i,
                len(spec.steps),
                step.percent,
                record.candidate,
                baked,
                spec.interval,
                describe_gates(gates),
            )
            if _judged(gates, baked, spec.interval):
                break
        step.baked_s = round(baked, 3)
        step.stable, step.candidate, step.gates = s_m, c_m, gates
        step.passed = not any(g.passed is False for g in gates)

    def _roll_back_failed_step(
        self,
        service: DeploymentService,
        stable: DeploymentConfig,
        record: RolloutRecord,
        step: StepRecord,
        i: int,
        timeout: float,
    ) -> RolloutFailedError:
        """A step failed its gates: all traffic back to stable, the rollout recorded as
        rolled back; returns the error to raise (with the numbers and the record)."""
        c_m = step.candidate or RevisionMetrics(config_hash=record.candidate)
        reason = (
            f"step {i}/{len(record.spec.steps)} ({step.percent}% of requests) failed its gates: "
            f"{describe_gates(step.gates)}; candidate {c_m.requests} answered, "
            f"{c_m.errors} errors {_nonzero(c_m.errors_by_kind)}".rstrip()
        )
        self._roll_back(service, stable, timeout, "rollback of the rollout")
        record.finish("rolled_back", reason)
        name = record.deployment
        err = RolloutFailedError(
            f"Rollout of revision {record.candidate} of '{name}' rolled back: "
            f"{reason}. Revision {record.stable} serves all requests again.",
            deployment_name=name,
            hint=f"see the candidate's logs; the rollout's record is the run "
            f"metadata 'rollout' (`zmd models describe {name} --stats` shows live stats).",
        )
        err.rollout = record
        return err

    # ----------------------------------------------------------------- split changes
    def _split(
        self,
        service: DeploymentService,
        stable: DeploymentConfig,
        candidate: DeploymentConfig,
        percent: int,
        timeout: float,
        what: str,
    ) -> None:
        """``percent`` % of requests to the candidate, the rest to stable; recorded."""

        def change() -> None:
            service.set_traffic_split(stable, candidate, percent, timeout)
            service.status.canary_config = candidate.model_dump(mode="json")
            service.status.canary_percent = percent

        self._apply(service, change, what)

    def _promote(
        self, service: DeploymentService, candidate: DeploymentConfig, timeout: float
    ) -> None:
        """All traffic to the candidate, which becomes the recorded revision."""

        def change() -> None:
            service.set_traffic_split(candidate, None, 0, timeout)
            service.config = candidate
            service.status.canary_config = None
            service.status.canary_percent = 0
            service.status.revision += 1
            service.mark_ready()

        self._apply(service, change, f"promotion of {candidate.config_hash()}")

    def _roll_back(
        self, service: DeploymentService, stable: DeploymentConfig, timeout: float, what: str
    ) -> None:
        """All traffic to the stable revision; the candidate is retired."""

        def change() -> None:
            service.set_traffic_split(stable, None, 0, timeout)
            service.status.canary_config = None
            service.status.canary_percent = 0

        self._apply(service, change, what)

    def _apply(self, service: DeploymentService, change: Callable[[], None], what: str) -> None:
        """Runs a split change; on failure records why and keeps the recorded split. A change
        that succeeds clears the error an earlier one left (a failed canary retried: the
        deployment serves as asked, and `describe` must not say otherwise)."""
        try:
            change()
        except BaseException as e:
            if not isinstance(e, ConfigurationError):
                service.status.last_error = f"{what} failed: {e}"[:2000]
                with contextlib.suppress(Exception):
                    self._persist(service)
            raise
        service.status.clear_error()
        self._persist(service)


def _require_serving(service: DeploymentService, why: str, instead: str) -> None:
    """Refuses a traffic change on a deployment that does not serve (nothing changes)."""
    if service.status.state != ServiceState.ACTIVE:
        name = service.deployment_name
        raise ConfigurationError(
            f"Deployment '{name}' is not serving ({service.status.state.value}): {why}.",
            deployment_name=name,
            hint=f"`zmd models start {name}` first, or deploy {instead}.",
        )


def _judged(gates: list[GateResult], baked: float, interval: float) -> bool:
    """Whether a step has baked enough for its verdict: errors fail it as soon as there are
    enough requests to judge; otherwise it bakes its interval, and up to one more for
    ``min_requests``."""
    enough = bool(gates[0].passed)
    errors_failed = enough and gates[1].passed is False
    return errors_failed or (baked >= interval and (enough or baked >= 2 * interval))


def _last_stable_p95(record: RolloutRecord) -> float | None:
    """The stable revision's p95 in the latest step that measured one (the reference of a
    step in which the stable revision answered nothing)."""
    for s in reversed(record.steps):
        if s.stable is not None and s.stable.requests and s.stable.latency_p95_ms is not None:
            return s.stable.latency_p95_ms
    return None


def _window(
    now: dict[str, RevisionMetrics],
    before: dict[str, RevisionMetrics],
    revision: str,
    seconds: float,
) -> RevisionMetrics:
    """One revision's metrics between two cumulative readings."""
    cur = now.get(revision) or RevisionMetrics(config_hash=revision)
    return cur.since(before.get(revision), seconds)


def _nonzero(counts: dict[str, int]) -> str:
    kinds = ", ".join(f"{k} {n}" for k, n in counts.items() if n)
    return f"({kinds})" if kinds else ""

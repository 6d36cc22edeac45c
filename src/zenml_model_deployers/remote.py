"""InPlaceDeploymentService: the one update-and-roll-back loop of remote backends.

Remote backends (Databricks Model Serving, Seldon, KServe, Hugging Face) keep one object per
deployment and change it in place, so a failed update must be undone *on the backend*. This
base does that once: apply the new target -> wait until the backend serves it -> smoke ->
on failure apply the previous target, wait for it, and raise the first cause together with
the rollback's outcome; an interruption (Ctrl-C, a killed step) puts the previous target back
without waiting.

A flavor provides three hooks:

- ``apply_target(target, previous)``: ask the backend to serve ``target`` (``previous`` is
  None for a new deployment: create it). Returns once the backend accepted the request.
- ``read_backend()``: the backend's current state, as a :class:`BackendState`.
- ``serves(state, target)``: whether that state serves ``target`` (ready and on its revision).

and may refine, where its backend differs: ``revision_label`` (how messages name a revision),
``smoke``, ``record_state`` (keep what a read says), ``record_event`` (a flavor's event log),
``wait_hint`` (the fix an error of a wait suggests), ``updates_in_place`` (False: the object is
gone and a deploy creates it again), ``on_create_failed`` (remove what a failed create made).

A *target* is what the backend should serve: a stable revision and, during a canary, a
candidate revision with its share of the traffic (see ``deployer.BaseDeployer.promote``).
"""

from __future__ import annotations

import contextlib
import time
from abc import abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from zenml_model_deployers.config import DeploymentConfig
from zenml_model_deployers.errors import DeploymentError, DeploymentTimeoutError
from zenml_model_deployers.progress import WaitProgress
from zenml_model_deployers.service import DeploymentService


class ServingTarget(BaseModel):
    """What a backend should serve: a stable revision, optionally with a canary candidate.

    Attributes:
        stable: the stable revision's config.
        candidate: the canary candidate's config (None: the stable one takes all traffic).
        candidate_percent: the candidate's share of requests, 0-100.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    stable: DeploymentConfig
    candidate: DeploymentConfig | None = None
    candidate_percent: int = Field(default=0, ge=0, le=100)

    def routes(self) -> dict[str, int]:
        """The traffic split by config hash (what the backend's routes must say).

        Returns:
            config hash -> percent of requests; one entry of 100 without a candidate.
        """
        if self.candidate is None or self.candidate_percent == 0:
            return {self.stable.config_hash(): 100}
        return {
            self.stable.config_hash(): 100 - self.candidate_percent,
            self.candidate.config_hash(): self.candidate_percent,
        }


class BackendState(BaseModel):
    """What the backend reports about a deployment's object, in its own words.

    Attributes:
        state: the backend's state word (e.g. ``READY``, ``running``).
        message: the backend's message about it (shown in errors and progress).
        url: the URL the backend serves the deployment at, once known.
        failed: the backend reports that the last change failed (stop waiting).
        gone: the object does not exist (deleted outside zmd).
        raw: the backend's own object, for the flavor's ``serves`` and bookkeeping.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    state: str
    message: str = ""
    url: str | None = None
    failed: bool = False
    gone: bool = False
    raw: Any = None


class InPlaceDeploymentService(DeploymentService):
    """Base of services whose backend updates one object in place (see the module docstring).

    ``provision_revision`` creates (first revision) or updates in place with rollback;
    ``set_traffic_split`` does the same for a canary's routes (flavors whose backend can
    route set ``SUPPORTS_TRAFFIC_SPLIT``). Subclasses implement
    ``apply_target``, ``read_backend``, ``serves`` and the stop/start/delete/logs hooks.
    """

    FIRST_POLL: ClassVar[float] = 0.2
    MAX_POLL: ClassVar[float] = 5.0
    BACKEND: ClassVar[str] = "the backend"

    _interrupted: bool = PrivateAttr(default=False)
    _rollout_timeout: float = PrivateAttr(default=0.0)

    @property
    def restoring_after_interruption(self) -> bool:
        """True while ``apply_target`` puts the previous target back after an interruption:
        the apply must not wait for anything then (e.g. for a running change to end)."""
        return self._interrupted

    @property
    def rollout_timeout(self) -> float:
        """The timeout of the rollout in progress (seconds): what a wait *inside* an apply
        (e.g. for the backend's running change to end) may take at most."""
        return self._rollout_timeout

    # ----------------------------------------------------------------- flavor hooks
    @abstractmethod
    def apply_target(self, target: ServingTarget, previous: ServingTarget | None) -> None:
        """Asks the backend to serve ``target``; returns once the request was accepted.

        Args:
            target: what to serve.
            previous: what served until now (None: nothing exists yet, create it).

        Raises:
            DeploymentError: the backend refused (its message first); nothing changed.
        """

    @abstractmethod
    def read_backend(self) -> BackendState:
        """Reads the deployment's object from the backend (one API call).

        Returns:
            Its state.
        """

    @abstractmethod
    def serves(self, state: BackendState, target: ServingTarget) -> bool:
        """Tells whether ``state`` is ready and serves ``target`` (its revisions and routes).

        Args:
            state: what ``read_backend`` returned.
            target: what should be served.

        Returns:
            True when requests are answered by ``target``.
        """

    def revision_label(self, config: DeploymentConfig) -> str:
        """How messages name a revision (default: its model reference and config hash).

        Args:
            config: a revision's config.

        Returns:
            A short label.
        """
        return f"{config.model_uri} ({config.config_hash()})"

    def target_label(self, target: ServingTarget) -> str:
        """How messages name a target.

        Args:
            target: the target.

        Returns:
            e.g. ``models:/m/2 (ab12...)`` or ``... 90% + ... 10%``.
        """
        if target.candidate is None or target.candidate_percent == 0:
            return self.revision_label(target.stable)
        return (
            f"{self.revision_label(target.stable)} {100 - target.candidate_percent}% + "
            f"{self.revision_label(target.candidate)} {target.candidate_percent}%"
        )

    def smoke(self, target: ServingTarget) -> None:
        """Checks that the served target predicts (``smoke_input``); raises if it does not.

        Args:
            target: what now serves.

        Raises:
            DeploymentError: the smoke prediction failed.
        """
        example = target.stable.smoke_input
        if example is None:
            return
        try:
            self.predict(example, timeout=60)
        except DeploymentError as e:
            raise DeploymentError(
                f"Deployment '{self.deployment_name}' runs but its smoke prediction failed.",
                deployment_name=self.deployment_name,
                backend_message=e.backend_message or str(e),
                hint="check that `smoke_input` matches what the model expects.",
            ) from e

    def record_state(self, state: BackendState) -> None:
        """Keeps what a state read says in ``self.status`` (default: the URL).

        Args:
            state: a state read from the backend.
        """
        if state.url:
            self.status.url = state.url

    def record_event(self, message: str) -> None:
        """Notes what happened to the deployment's object (a rollback and its outcome), for
        flavors that keep an event log (what ``get_logs`` shows); default: nothing.

        Args:
            message: one line.
        """

    def wait_hint(self, state: BackendState, *, timed_out: bool) -> str:
        """The fix suggested when a wait ends in failure (the backend's own words come first).

        Args:
            state: the last state read.
            timed_out: the wait ran out of time (else: the backend reported a failure).

        Returns:
            The hint.
        """
        if timed_out:
            return "raise the step's `timeout` (or the component's default_timeout)."
        return (
            f"fix the cause above; the model's own logs: `zmd models logs {self.deployment_name}`."
        )

    def updates_in_place(self) -> bool:
        """Tells whether a new revision updates the backend's object (default: once a revision
        is recorded). A flavor returns False where the object is known to be gone: the new
        revision then creates it, as a first deploy does (nothing to roll back to).

        Returns:
            True to update in place (with rollback), False to create.
        """
        return self.live_target() is not None

    def on_create_failed(self, cause: BaseException) -> None:
        """Called when a create (nothing to roll back to) failed after the backend accepted
        it. Default: nothing (the lifecycle's ``discard_backend`` deletes what was made). A
        flavor that creates outside the lifecycle too (e.g. in ``start_backend``) removes the
        object here, and may raise a more telling error from ``cause``.

        Args:
            cause: what failed.
        """

    def poll_backend(
        self, until: Callable[[BackendState], bool], timeout: float
    ) -> BackendState | None:
        """Reads the backend until ``until(state)`` holds (quickly first, then every few
        seconds), at most ``timeout`` seconds; no progress line (short waits: pause, delete).

        Args:
            until: the condition.
            timeout: seconds.

        Returns:
            The state that met it, or None when time ran out.
        """
        deadline = time.monotonic() + timeout
        delay = self.FIRST_POLL
        while True:
            state = self.read_backend()
            if until(state):
                return state
            now = time.monotonic()
            if now >= deadline:
                return None
            time.sleep(min(delay, max(deadline - now, 0.0)))
            delay = min(delay * 1.5, self.MAX_POLL)

    # ----------------------------------------------------------------- what serves
    def live_target(self) -> ServingTarget | None:
        """What the backend was last recorded to serve (None for a new deployment).

        Returns:
            The recorded stable revision, plus the canary's candidate if one is in progress.
        """
        if not self.status.live_config:
            return None
        candidate = self.canary_candidate()
        return ServingTarget(
            stable=type(self.config).model_validate(self.status.live_config),
            candidate=candidate,
            candidate_percent=self.status.canary_percent if candidate is not None else 0,
        )

    # ----------------------------------------------------------------- the loop
    def wait_until_serving(self, target: ServingTarget, timeout: float, what: str) -> BackendState:
        """Polls the backend until it serves ``target``; bounded, with progress.

        Args:
            target: what must be served.
            timeout: seconds.
            what: what is waited for, for messages (e.g. "update to ...").

        Returns:
            The state that serves it.

        Raises:
            DeploymentError: the backend reports the change failed, or the object is gone.
            DeploymentTimeoutError: not served within ``timeout``.
        """
        start = time.monotonic()
        deadline = start + timeout
        delay = self.FIRST_POLL
        last = ""
        progress = WaitProgress(f"Waiting for deployment '{self.deployment_name}' ({what})")
        try:
            while True:
                state = self.read_backend()
                self.record_state(state)
                last = f"{state.state}: {state.message}" if state.message else state.state
                if state.failed:
                    raise DeploymentError(
                        f"Deployment '{self.deployment_name}' ({what}): {self.BACKEND} reports "
                        f"'{state.state}'.",
                        deployment_name=self.deployment_name,
                        backend_message=state.message or state.state,
                        hint=self.wait_hint(state, timed_out=False),
                    )
                if state.gone:
                    raise DeploymentError(
                        f"Deployment '{self.deployment_name}' ({what}): its object on "
                        f"{self.BACKEND} no longer exists (deleted outside zmd?).",
                        deployment_name=self.deployment_name,
                        backend_message=state.message or None,
                        hint=f"`zmd models start {self.deployment_name}` creates it again.",
                    )
                if self.serves(state, target):
                    return state
                now = time.monotonic()
                if now >= deadline:
                    raise DeploymentTimeoutError(
                        f"Deployment '{self.deployment_name}' did not serve "
                        f"{self.target_label(target)} after {timeout:.0f} s ({what}).",
                        deployment_name=self.deployment_name,
                        backend_message=f"last state: {last}",
                        hint=self.wait_hint(state, timed_out=True),
                    )
                progress.tick(now - start, last)
                time.sleep(min(delay, max(deadline - now, 0.0)))
                delay = min(delay * 1.5, self.MAX_POLL)
        finally:
            progress.done()

    def roll_out(
        self, target: ServingTarget, previous: ServingTarget | None, timeout: float, what: str
    ) -> BackendState:
        """Applies ``target``, waits until it serves, smokes it; undoes it on failure.

        On failure with a ``previous`` target, the previous one is applied again and waited
        for, and the first cause is raised (same type, backend message kept) saying whether
        the rollback worked. An interruption puts ``previous`` back without waiting. Without
        one (a create), ``on_create_failed`` is told before the error goes on.

        Args:
            target: what to serve.
            previous: what served until now (None for a new deployment: nothing to restore;
                the caller deletes what was made).
            timeout: seconds, for the rollout and again for a rollback.
            what: what is done, for messages.

        Returns:
            The state that serves ``target``.

        Raises:
            DeploymentError: the rollout failed (see above).
        """
        self._rollout_timeout = timeout
        self.apply_target(target, previous)
        try:
            state = self.wait_until_serving(target, timeout, what)
            self.smoke(target)
            return state
        except Exception as cause:
            if previous is None:
                self.on_create_failed(cause)
                raise
            self._roll_back(previous, target, timeout, cause)
            raise  # unreachable: _roll_back always raises
        except BaseException as cause:
            if previous is None:
                self.on_create_failed(cause)
            else:
                self._interrupted = True
                try:
                    with contextlib.suppress(Exception):
                        self.apply_target(previous, target)
                finally:
                    self._interrupted = False
            raise

    def _roll_back(
        self,
        previous: ServingTarget,
        failed: ServingTarget,
        timeout: float,
        cause: Exception,
    ) -> None:
        """Applies ``previous`` again, waits for it, then raises ``cause`` with the outcome."""
        backend = cause.backend_message if isinstance(cause, DeploymentError) else str(cause)
        first = str(cause.args[0]).splitlines()[0] if cause.args else str(cause)
        label = self.target_label(previous)
        self.record_event(f"{self.target_label(failed)} failed; rolling back to {label}")
        try:
            self.apply_target(previous, failed)
            self.wait_until_serving(previous, timeout, f"rollback to {label}")
        except Exception as rollback_error:
            self.record_event(f"rollback to {label} failed")
            raise DeploymentError(
                f"{first} Putting deployment '{self.deployment_name}' back on {label} failed "
                f"too: {str(rollback_error).splitlines()[0]}",
                deployment_name=self.deployment_name,
                backend_message=backend,
                hint=f"check the deployment on {self.BACKEND}; deploy a known-good revision "
                "again (`zmd models recreate --run <run>`).",
            ) from cause
        self.record_event(f"rolled back: {label} serves again")
        cls = type(cause) if isinstance(cause, DeploymentError) else DeploymentError
        raise cls(
            f"{first} The deployment was put back on the previous revision ({label}), which "
            "serves again at the same URL.",
            deployment_name=self.deployment_name,
            backend_message=backend,
            hint=cause.hint if isinstance(cause, DeploymentError) else None,
        ) from cause

    # ----------------------------------------------------------------- DeploymentService hooks
    def provision_revision(self, timeout: float) -> None:
        """Creates the deployment (first revision) or updates it in place with rollback.

        Args:
            timeout: seconds to wait until the backend serves the revision.
        """
        previous = self.live_target() if self.updates_in_place() else None
        target = ServingTarget(stable=self.config)
        what = (
            f"create of {self.revision_label(self.config)}"
            if previous is None
            else f"update to {self.revision_label(self.config)}"
        )
        self.roll_out(target, previous, timeout, what)
        self.status.revision += 1
        self.mark_ready()

    def set_traffic_split(
        self,
        stable: DeploymentConfig,
        candidate: DeploymentConfig | None,
        candidate_percent: int,
        timeout: float,
    ) -> None:
        """Applies the split as a target, with the same wait and rollback as an update.

        Args:
            stable: the stable revision.
            candidate: the candidate (None: ``stable`` takes all traffic).
            candidate_percent: the candidate's share, 0-100.
            timeout: seconds.
        """
        self._require_split()
        target = ServingTarget(
            stable=stable, candidate=candidate, candidate_percent=candidate_percent
        )
        self.roll_out(target, self.live_target(), timeout, f"traffic {self.target_label(target)}")

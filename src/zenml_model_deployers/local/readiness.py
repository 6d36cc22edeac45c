"""Bounded readiness waits with progress, failing fast when the server process exits."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import requests

from zenml_model_deployers import secrets
from zenml_model_deployers.errors import DeploymentError, DeploymentTimeoutError
from zenml_model_deployers.local.process import (
    ProcessHandle,
    failure_cause,
    failure_excerpt,
    reap_children,
)
from zenml_model_deployers.local.state import tail
from zenml_model_deployers.progress import WaitProgress

# Lines of the log an error shows (after its last error lines); the full log is kept.
CONTEXT_LINES = 8


def wait_until_ready(
    *,
    deployment_name: str,
    process: ProcessHandle,
    log_path: Path,
    health_url: str,
    health_method: str,
    timeout: float,
    smoke: Callable[[], None] | None = None,
    what: str = "server",
    keep_log: Callable[[Path], Path] | None = None,
    cause_of: Callable[[Path], str] = failure_cause,
) -> float:
    """Polls the health URL until it answers 2xx, then runs the optional smoke prediction.

    Args:
        deployment_name: for messages.
        process: the server process; its exit fails the wait at once.
        log_path: the server's log, whose tail goes into every error.
        health_url: the URL to poll.
        health_method: GET, HEAD or POST.
        timeout: seconds.
        smoke: called once health answers; raising fails readiness.
        what: how to name the server in messages.
        keep_log: on failure, moves the log where it outlives the clean-up; returns the path
            the error names.
        cause_of: reads the backend's one-line error from the log (the error's first line).

    Returns:
        Seconds it took.

    Raises:
        DeploymentError: the process exited, or the smoke prediction failed.
        DeploymentTimeoutError: not ready in time.
    """
    start = time.monotonic()
    deadline = start + timeout
    session = requests.Session()
    last = ""
    progress = WaitProgress(f"Waiting for {what} of '{deployment_name}' to be ready")
    try:
        while True:
            reap_children()
            if not process.is_alive():
                # The backend's own one-line error first, a few lines of context, and the
                # full log (kept) for the whole traceback.
                cause = cause_of(log_path)
                what_failed = (
                    f"The {what} of deployment '{deployment_name}' exited before it was ready"
                )
                context = failure_excerpt(log_path, CONTEXT_LINES)
                kept = keep_log(log_path) if keep_log else log_path
                raise DeploymentError(
                    f"{cause}\n{what_failed}." if cause else f"{what_failed}.",
                    deployment_name=deployment_name,
                    backend_message=context,
                    hint=f"fix the cause above; full log: {kept}",
                )
            try:
                r = session.request(health_method, health_url, timeout=2)
                if r.status_code < 300:
                    break
                last = f"health answered HTTP {r.status_code}"
            except requests.RequestException as e:
                last = type(e).__name__
            if time.monotonic() >= deadline:
                context = failure_excerpt(log_path, CONTEXT_LINES)
                kept = keep_log(log_path) if keep_log else log_path
                raise DeploymentTimeoutError(
                    f"Deployment '{deployment_name}' was not ready after {timeout:.0f} s "
                    f"({health_method} {health_url}: {last}).",
                    deployment_name=deployment_name,
                    backend_message=context,
                    hint=f"raise the timeout if the model is slow to load; full log: {kept}",
                )
            # What the server is doing now (downloading, loading weights...): its last log line.
            progress.tick(time.monotonic() - start, _last_line(log_path))
            time.sleep(0.05)  # a ready server is noticed within 50 ms
        if smoke is not None:
            try:
                smoke()
            except Exception as e:
                context = failure_excerpt(log_path, CONTEXT_LINES)
                kept = keep_log(log_path) if keep_log else log_path
                raise DeploymentError(
                    f"Deployment '{deployment_name}' is up but its smoke prediction failed: {e}",
                    deployment_name=deployment_name,
                    backend_message=context,
                    hint=f"check `smoke_input` matches the model's signature; full log: {kept}",
                ) from e
    finally:
        session.close()
        progress.done()
    return time.monotonic() - start


def _last_line(log_path: Path, width: int = 120) -> str:
    """The log's last non-empty line, redacted and shortened (for progress)."""
    lines = [ln.strip() for ln in tail(log_path, 3, max_bytes=4096).splitlines() if ln.strip()]
    if not lines:
        return ""
    line = secrets.redact(lines[-1])
    return line if len(line) <= width else line[: width - 3] + "..."

"""Typed exceptions: every failure names what failed, the backend's words, and what to do."""

from __future__ import annotations

from zenml_model_deployers.redaction import redact


class DeploymentError(RuntimeError):
    """A deployment operation failed.

    Attributes:
        deployment_name: the deployment concerned, if known.
        backend_message: the backend's own message (log tail, API error body), redacted.
        hint: what the user can do about it.
    """

    def __init__(
        self,
        message: str,
        *,
        deployment_name: str | None = None,
        backend_message: str | None = None,
        hint: str | None = None,
    ) -> None:
        """Builds the error.

        Args:
            message: what failed.
            deployment_name: the deployment concerned.
            backend_message: the backend's own message.
            hint: what to do about it.
        """
        self.deployment_name = deployment_name
        self.backend_message = redact(backend_message) if backend_message else None
        self.hint = hint
        parts = [redact(message)]
        if self.backend_message:
            parts.append(f"Backend said:\n{self.backend_message.rstrip()}")
        if hint:
            parts.append(f"What to do: {hint}")
        super().__init__("\n".join(parts))


class DeploymentTimeoutError(DeploymentError):
    """The deployment did not become ready within its timeout."""


class DeploymentNotFoundError(DeploymentError, KeyError):
    """No deployment matches the given id, id prefix or name."""

    def __str__(self) -> str:
        """Plain message (KeyError would quote it)."""
        return str(self.args[0]) if self.args else ""


class AmbiguousReferenceError(DeploymentNotFoundError):
    """An id prefix or name matches several deployments (none is picked)."""


class DeploymentExistsError(DeploymentError):
    """A deployment with a different configuration exists and the policy is `fail`."""


class PortInUseError(DeploymentError):
    """A pinned port is already taken by another process."""


class ConfigurationError(DeploymentError, ValueError):
    """The deployment configuration is invalid; nothing was started."""


class SecretResolutionError(DeploymentError):
    """A secret reference could not be resolved from the ZenML secret store."""


class PredictionError(DeploymentError):
    """A prediction request to a deployed model failed.

    Attributes:
        status_code: the HTTP status the backend answered, if it answered one.
        retry_after: seconds the backend asked to wait (its ``Retry-After``), if it did.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        retry_after: float | None = None,
        deployment_name: str | None = None,
        backend_message: str | None = None,
        hint: str | None = None,
    ) -> None:
        """Builds the error.

        Args:
            message: what failed.
            status_code: the backend's HTTP status (lets callers tell 429/503 from a refusal).
            retry_after: the backend's ``Retry-After``, in seconds.
            deployment_name: the deployment concerned.
            backend_message: the backend's own message.
            hint: what to do about it.
        """
        self.status_code = status_code
        self.retry_after = retry_after
        super().__init__(
            message, deployment_name=deployment_name, backend_message=backend_message, hint=hint
        )


class BatchInterruptedError(DeploymentError):
    """A batch job was interrupted (Ctrl-C in a pipeline, a stopped step), not failed: what it
    committed stays committed, and the same job run again resumes after it."""


# What ZenML's step signal handler raises in the step's thread on SIGINT / SIGTERM instead of
# KeyboardInterrupt (zenml.orchestrators.signal_handler), named here so that this module
# imports no ZenML.
_ZENML_INTERRUPTIONS = frozenset({"RunInterruptedException", "RunStoppedException"})


def is_interruption(error: BaseException) -> bool:
    """Whether an exception is an interruption (Ctrl-C, a stopped run), not a failure of what
    was running: ``KeyboardInterrupt``, or ZenML's ``RunInterruptedException`` /
    ``RunStoppedException``, which its step signal handler raises wherever the step's thread
    was (inside a request, a wait, a model's predict).

    Args:
        error: the exception.

    Returns:
        True for an interruption.
    """
    if isinstance(error, KeyboardInterrupt):
        return True
    return any(
        c.__module__ == "zenml.exceptions" and c.__name__ in _ZENML_INTERRUPTIONS
        for c in type(error).__mro__
    )


class RolloutFailedError(DeploymentError):
    """A progressive rollout failed a gate (or broke) and was rolled back: the stable revision
    serves all requests again and the candidate is gone.

    Attributes:
        rollout: the rollout's record (``rollout.RolloutRecord``): steps, gate values, verdict.
    """

    rollout: object = None

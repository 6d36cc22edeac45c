"""The lock that serialises changes to one deployment (deploy, canary, start, stop, delete).

A file lock under the ZenML config dir, so that two pipelines (or a pipeline and ``zmd``) on
one host never change the same deployment at once; remote backends' own name uniqueness
covers other hosts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from zenml_model_deployers.errors import DeploymentError

# Beyond the change's own timeout: the holder may still be rolling back or cleaning up.
GRACE_S = 120


def lock_file(home: Path, flavor: str, name: str) -> Path:
    """Where the lock of deployment ``name`` of ``flavor`` lives: the one place that says so,
    shared with the CLI's ZenML-free fast start (``local/faststart.py``).

    Args:
        home: the product's directory (``<ZenML config dir>/zmd``).
        flavor: the flavor name (``zmd-...``).
        name: the deployment name.

    Returns:
        The lock file's path.
    """
    return home / "locks" / f"{flavor}--{name}.lock"


@contextlib.contextmanager
def deployment_lock(flavor: str, name: str, timeout: float) -> Iterator[None]:
    """Holds the lock of deployment ``name`` of ``flavor`` while the block runs.

    Args:
        flavor: the flavor name (``zmd-...``).
        name: the deployment name.
        timeout: the change's timeout (the wait for the lock adds ``GRACE_S``).

    Yields:
        Nothing; the lock is held meanwhile.

    Raises:
        DeploymentError: another change held the lock for too long.
    """
    from zenml_model_deployers.local.service import private_dir, zmd_home

    home = zmd_home()
    private_dir(home / "locks")
    lock = FileLock(str(lock_file(home, flavor, name)), mode=0o600)
    try:
        lock.acquire(timeout=timeout + GRACE_S)
    except Timeout as e:
        raise DeploymentError(
            f"Another deploy of '{name}' holds the lock for too long.",
            deployment_name=name,
            hint=f"remove {lock.lock_file} if no other deploy runs.",
        ) from e
    try:
        yield
    finally:
        lock.release()

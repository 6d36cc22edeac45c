"""Runs an example as a user runs it from a clone: `python examples/<name>/run.py --offline`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_offline_example(name: str, timeout: float = 400) -> str:
    """Runs ``examples/<name>/run.py --offline`` in its own process (it makes its own
    throw-away ZenML config and offline backend, and cleans up) and checks it succeeded.

    Args:
        name: the example's folder.
        timeout: seconds it may take.

    Returns:
        Its stdout.
    """
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name / "run.py"), "--offline"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout

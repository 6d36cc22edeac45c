"""Progress of a bounded wait: a spinner on a terminal, a line every 10 s otherwise (CI logs).

Shared by every wait that can take long: local servers becoming ready, remote endpoints
being created, updated or resumed.
"""

from __future__ import annotations

import sys
from typing import Any


class WaitProgress:
    """Shows that a wait is alive, and what it waits on, without flooding a log.

    Attributes:
        message: what is waited for (e.g. "Waiting for server of 'iris' to be ready").
    """

    def __init__(self, message: str) -> None:
        """Starts the spinner (on a terminal).

        Args:
            message: what is waited for.
        """
        self.message = message
        self.status: Any = None
        self.next_line = 10.0
        if sys.stderr.isatty():
            from rich.console import Console

            self.status = Console(stderr=True).status(message + " ...")
            self.status.start()

    def tick(self, elapsed: float, detail: str = "") -> None:
        """Reports the elapsed time (and what the backend says now).

        Args:
            elapsed: seconds since the wait began.
            detail: e.g. the backend's current state.
        """
        suffix = f" ({detail})" if detail else ""
        if self.status is not None:
            self.status.update(f"{self.message} ... {elapsed:.0f} s{suffix}")
        elif elapsed >= self.next_line:
            print(f"{self.message} ... {elapsed:.0f} s{suffix}", file=sys.stderr, flush=True)
            self.next_line += 10.0

    def done(self) -> None:
        """Stops the spinner."""
        if self.status is not None:
            self.status.stop()

"""A client that loops on a URL while something changes behind it, counting failed requests.

Plain Python (no pytest): the examples use it to show an update that fails no request, and the
conformance suite uses it to check that guarantee.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import requests


class RequestLoop:
    """A client looping on a URL in a thread (bounded), counting failed requests."""

    def __init__(
        self,
        url: str,
        body: bytes,
        headers: dict[str, str],
        max_seconds: float = 180,
        request_timeout: float = 30,
    ) -> None:
        """Prepares the loop.

        Args:
            url: the URL.
            body: request body.
            headers: request headers.
            max_seconds: hard bound on the loop's duration.
            request_timeout: seconds one request may take before it counts as failed (an LLM
                on 2 busy CPU cores, beside a second server starting, takes more than 30).
        """
        self.url, self.body, self.headers = url, body, headers
        self.max_seconds = max_seconds
        self.request_timeout = request_timeout
        self.ok = 0
        self.failures: list[str] = []
        self.answers: list[Any] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        session = requests.Session()
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                r = session.post(
                    self.url, data=self.body, headers=self.headers, timeout=self.request_timeout
                )
                if r.status_code == 200:
                    self.ok += 1
                    self.answers.append(r.json())
                else:
                    self.failures.append(f"HTTP {r.status_code}: {r.text[:200]}")
            except requests.RequestException as e:
                self.failures.append(f"{type(e).__name__}: {e}")
            time.sleep(0.005)
        session.close()

    def __enter__(self) -> RequestLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.request_timeout + 30)

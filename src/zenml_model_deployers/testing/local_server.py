"""What the offline doubles of remote APIs share: a real HTTP server on a free port of
127.0.0.1, served by a daemon thread, and the JSON request handling of their APIs.

``databricks_double`` and ``hf_double`` build on it; a double is started with ``with`` (or
``start()``) and stopped with ``close()``.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


class LocalServer(ThreadingHTTPServer):
    """A threading HTTP server on a free port of 127.0.0.1, serving from a daemon thread."""

    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler], thread_name: str) -> None:
        """Binds a free port and starts serving.

        Args:
            handler: the request handler class.
            thread_name: the serving thread's name (seen in thread dumps).
        """
        super().__init__(("127.0.0.1", 0), handler)
        threading.Thread(
            target=self.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=thread_name,
            daemon=True,
        ).start()

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        """Stops serving and closes the socket (the URL refuses connections afterwards)."""
        self.shutdown()
        self.server_close()


class ServedDouble:
    """Base of a double served by one :class:`LocalServer` (started with ``with``/``start``).

    Subclasses implement ``_handler`` (the API's request handler class) and may extend
    ``close`` (e.g. to stop servers or workers of their own first).
    """

    THREAD_NAME = "zmd-double"
    _server: LocalServer | None = None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        """The request handler class of the double's API.

        Returns:
            The class.
        """
        raise NotImplementedError

    def start(self) -> Self:
        """Starts the API server on a free port of 127.0.0.1 (once).

        Returns:
            The double.
        """
        if self._server is None:
            self._server = LocalServer(self._handler(), self.THREAD_NAME)
        return self

    def close(self) -> None:
        """Stops the API server."""
        if self._server is not None:
            self._server.close()
            self._server = None

    def __enter__(self) -> Self:
        """Starts the double."""
        return self.start()

    def __exit__(self, *exc: object) -> None:
        """Stops the double."""
        self.close()

    @property
    def server_url(self) -> str:
        """The API server's ``http://127.0.0.1:PORT``.

        Raises:
            RuntimeError: the double is not started.
        """
        if self._server is None:
            raise RuntimeError("the double is not started: use `with` or start()")
        return self._server.url


class JSONHandler(BaseHTTPRequestHandler):
    """A request handler that reads and answers JSON (HTTP/1.1, silent)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: tests read state from the double, not from its access log."""

    def read_body(self) -> bytes:
        """The request's body.

        Returns:
            Its bytes (empty when none).
        """
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        """Answers ``payload`` (JSON, or bytes as they are).

        Args:
            status: the HTTP status.
            payload: a JSON-able value, or bytes.
            headers: more response headers (``Content-Type`` among them replaces JSON's).
        """
        extra = dict(headers or {})
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", extra.pop("Content-Type", "application/json"))
        for key, value in extra.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

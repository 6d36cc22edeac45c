"""A cheap local flavor for tests of the local runtime's traffic logic (canaries, rollouts):
the real LocalProcessService, relay and lifecycle, in front of a tiny HTTP server (this file,
run as a script) that starts in a fraction of a second.

Its "model URI" says how the server behaves: ``toy://NAME?err=P&delay=MS`` answers
``{"predictions": ["NAME"]}``, with HTTP 500 on P % of its requests (spread evenly, no
randomness) and MS milliseconds of latency on each.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlparse
from uuid import uuid4

FLAVOR = "zmd-localtoy"


def serve(model_uri: str, port: int) -> None:
    """Serves the toy model on 127.0.0.1:port until killed."""
    u = urlparse(model_uri)
    q = parse_qs(u.query)
    name = u.netloc
    err = int(q.get("err", ["0"])[0])
    delay = float(q.get("delay", ["0"])[0]) / 1000
    acc = [0]
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _send(self, status: int, body: bytes) -> None:
            # One write per response (head and body apart would meet Nagle + delayed ACK).
            reason = b"OK" if status == 200 else b"Internal Server Error"
            self.wfile.write(
                b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                % (status, reason, len(body), body)
            )

        def do_GET(self) -> None:  # noqa: N802
            self._send(200, b"{}")

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with lock:
                acc[0] += err
                fail = acc[0] >= 100
                if fail:
                    acc[0] -= 100
            if delay:
                time.sleep(delay)
            if fail:
                self._send(500, json.dumps({"error": f"{name} failed"}).encode())
            else:
                self._send(200, json.dumps({"predictions": [name]}).encode())

        def log_message(self, *args: object) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    srv.daemon_threads = True
    srv.serve_forever()


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))
    sys.exit(0)

# ----------------------------------------------------------------------------- the flavor
from zenml.enums import StackComponentType  # noqa: E402
from zenml.models.v2.misc.service import ServiceType  # noqa: E402

from zenml_model_deployers.deployer import (  # noqa: E402
    BaseDeployer,
    BaseDeployerConfig,
    BaseDeployerFlavor,
)
from zenml_model_deployers.local.process import python_executable  # noqa: E402
from zenml_model_deployers.local.service import (  # noqa: E402
    LocalDeploymentConfig,
    LocalProcessService,
)


class LocalToyConfig(LocalDeploymentConfig):
    """A toy revision: its model URI says how it behaves."""

    health_path: str = "/ping"
    health_method: str = "GET"


class LocalToyService(LocalProcessService):
    """The toy server behind the real relay."""

    SERVICE_TYPE: ClassVar[ServiceType] = ServiceType(
        name="zmd-localtoy-deployment", type="model-serving", flavor=FLAVOR, description="toy"
    )
    FLAVOR: ClassVar[str] = FLAVOR

    config: LocalToyConfig

    def server_command(self, port: int) -> list[str]:
        return [
            python_executable(),
            str(Path(__file__).resolve()),
            self.config.model_uri,
            str(port),
        ]

    def parse_response(self, body: bytes) -> Any:
        return json.loads(body)["predictions"][0]


class LocalToyFlavor(BaseDeployerFlavor):
    FLAVOR_NAME: ClassVar[str] = FLAVOR
    DISPLAY_NAME: ClassVar[str] = "local toy"
    IMPLEMENTATION: ClassVar[str] = "local_toy.LocalToyDeployer"


class LocalToyDeployer(BaseDeployer):
    FLAVOR: ClassVar[type[BaseDeployerFlavor]] = LocalToyFlavor
    SERVICE_CLASS: ClassVar[type[LocalProcessService]] = LocalToyService


def local_toy_deployer() -> LocalToyDeployer:
    """An unregistered deployer of the toy flavor (the lifecycle needs only the service store)."""
    now = datetime.now(UTC)
    return LocalToyDeployer(
        name="localtoy",
        id=uuid4(),
        config=BaseDeployerConfig(default_timeout=30),
        flavor=FLAVOR,
        type=StackComponentType.MODEL_DEPLOYER,
        user=None,
        created=now,
        updated=now,
    )


def toy_config(name: str, model: str) -> LocalToyConfig:
    return LocalToyConfig(deployment_name=name, model_name=name, model_uri=model)

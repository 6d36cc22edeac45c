"""The front of a local deployment, seen from the deploying process: the relay process that
owns the deployment's public port, and the control channel that steers it.

``Front`` starts the relay (``local/launch.py``), checks the public port, and sends the relay's
line-JSON commands (``switch``, ``split``, ``drain``, ``accept``, ``fold``, ``metrics``), each
carrying the control token from the relay's 0600 ready file. It keeps no state of its own: it
reads and updates the deployment's ``LocalDeploymentStatus``, so ``LocalProcessService`` builds
one whenever it needs it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zenml_model_deployers.errors import DeploymentError, PortInUseError
from zenml_model_deployers.local import process as proc
from zenml_model_deployers.local.config import (
    LocalDeploymentConfig,
    LocalDeploymentStatus,
    private_dir,
    url_host,
)
from zenml_model_deployers.local.launch import METRICS_DIR, port_is_free, start_front
from zenml_model_deployers.local.relay_control import control_request, read_ready_file
from zenml_model_deployers.metrics import RevisionMetrics

# Seconds a retired server's requests in flight get to finish (the relay's `drain`, then the
# server's graceful stop).
DRAIN_TIMEOUT = 10.0

# A front set aside while a new one starts on another address: (relay, control port, public
# port, URL).
DetachedFront = tuple[proc.ProcessHandle | None, int | None, int | None, str | None]


@dataclass
class Front:
    """The relay of one deployment and its control channel.

    Attributes:
        deployment_name: the deployment.
        workdir: its directory (the relay's ready file lives there).
        config: the revision the commands speak for (its hash labels metrics; its API key
            is what the relay enforces after a ``switch``).
        status: the deployment's recorded processes and ports (read and updated here).
        api_key: resolves the config's API key (None without one).
        preferred_port: a re-created deployment's recorded port, taken when free.
        open_paths: paths the relay answers without the API key (GET/HEAD only).
        closed_paths: paths the relay refuses to every client (a server's admin routes).
    """

    deployment_name: str
    workdir: Path
    config: LocalDeploymentConfig
    status: LocalDeploymentStatus
    api_key: Callable[[], str | None]
    preferred_port: int | None = None
    open_paths: tuple[str, ...] = ()
    closed_paths: tuple[str, ...] = ()

    def alive(self) -> bool:
        """Whether the recorded relay process runs.

        Returns:
            True while it runs.
        """
        return self.status.relay is not None and self.status.relay.is_alive()

    def check_port(self) -> int:
        """The port the front is to listen on (0: a free one), checked to be free.

        Returns:
            The port.

        Raises:
            PortInUseError: the pinned or recorded port is taken; the hint is what works: the
                deploy step's (or config's) ``port=`` where nothing is deployed yet (a failed
                first deploy leaves no deployment to start), else also ``zmd models start
                --port``.
        """
        host = self.config.host
        port = self.config.port or self.status.public_port or 0
        preferred = self.preferred_port
        if not port and preferred and port_is_free(host, preferred):
            port = preferred
        if port and not port_is_free(host, port):
            pinned = "pinned" if self.config.port else "recorded"
            free = f"free port {port} (e.g. `lsof -i :{port}`)"
            if not self.status.config_hash:
                hint = (
                    f"{free}, or deploy with another `port=` in the deploy step (or its "
                    "config), or none for a free port. Nothing was deployed: there is no "
                    f"deployment '{self.deployment_name}' to start yet."
                )
            else:
                hint = (
                    f"{free}, or move the deployment: `zmd models start "
                    f"{self.deployment_name} --port <free port>` or the deploy step's `port=`."
                )
            raise PortInUseError(
                f"Port {port} ({pinned} for deployment '{self.deployment_name}') is already "
                f"in use on {host}.",
                deployment_name=self.deployment_name,
                hint=hint,
            )
        return port

    def ensure(self, target: int | None) -> None:
        """Starts the relay unless it runs, forwarding to ``target`` (None: refusing until a
        ``switch``), and records its ports and the deployment's URL.

        Args:
            target: the serving server's private port.
        """
        if self.alive():
            return
        host = self.config.host
        port = self.check_port()
        private_dir(self.workdir)
        metrics_port = self.config.metrics_port or self.status.metrics_port or 0
        if metrics_port and not port_is_free("127.0.0.1", metrics_port):
            metrics_port = 0 if not self.config.metrics_port else metrics_port
        handle, info = start_front(
            workdir=self.workdir,
            deployment_name=self.deployment_name,
            host=host,
            port=port,
            metrics_port=metrics_port,
            target=target,
            target_revision=self.status.config_hash,
            # Resolved before anything starts: a missing secret fails here.
            api_key=self.api_key(),
            open_paths=self.open_paths,
            closed_paths=self.closed_paths,
        )
        self.status.relay = handle
        self.status.public_port = int(info["port"])
        self.status.control_port = int(info["control_port"])
        self.status.metrics_port = int(info.get("metrics_port") or 0) or None
        self.status.url = f"http://{url_host(host)}:{self.status.public_port}"

    def ensure_out(self, target: int | None) -> None:
        """Starts the front if needed and takes it out of the data path (a direct server is
        about to accept on its socket).

        Args:
            target: the serving server's private port.
        """
        self.ensure(target=target)
        self.call({"cmd": "accept", "on": False, "timeout": 0})

    def step_in(self) -> None:
        """Puts the relay back into the data path (before the direct server is retired)."""
        if self.status.direct and self.alive():
            self.call({"cmd": "accept", "on": True})

    def detach_if_moved(self) -> DetachedFront | None:
        """If the config pins another port or host than the running front's, forgets the
        running front (returned, to restore or stop later) so that a new one starts.

        Returns:
            The front set aside, or None when it stays.
        """
        if not self.alive() or not self.status.url:
            return None
        pinned = self.config.port is not None and self.config.port != self.status.public_port
        moved_host = not self.status.url.startswith(f"http://{url_host(self.config.host)}:")
        if not (pinned or moved_host):
            return None
        front = (
            self.status.relay,
            self.status.control_port,
            self.status.public_port,
            self.status.url,
        )
        self.status.relay = None
        self.status.control_port = None
        self.status.public_port = None
        return front

    def restore(self, front: DetachedFront | None) -> None:
        """Records a front that :meth:`detach_if_moved` set aside as the deployment's again.

        Args:
            front: what it returned.
        """
        if front is not None:
            (
                self.status.relay,
                self.status.control_port,
                self.status.public_port,
                self.status.url,
            ) = front

    def stop(self) -> None:
        """Ends the relay process (the public port closes)."""
        if self.status.relay is not None:
            self.status.relay.terminate(5)
        self.status.relay = None
        self.status.control_port = None

    # ----------------------------------------------------------------- control channel
    def call(self, msg: dict[str, Any], timeout: float = 30) -> dict[str, Any]:
        """Sends one control command to the relay.

        Args:
            msg: the command, e.g. ``{"cmd": "status"}``.
            timeout: seconds.

        Returns:
            The relay's reply.

        Raises:
            DeploymentError: the relay refused the command.
        """
        assert self.status.control_port is not None
        # The token lives only in the relay's 0600 ready file, never in the service store.
        token = str(read_ready_file(self.workdir / "relay.json").get("token", ""))
        reply = control_request(self.status.control_port, token, msg, timeout)
        if not reply.get("ok"):
            raise DeploymentError(
                f"The relay of '{self.deployment_name}' refused {msg.get('cmd')}: {reply}",
                deployment_name=self.deployment_name,
            )
        return reply

    def switch(self, port: int) -> None:
        """Sends every new request to the server on ``port``: the ``switch`` command, with the
        config's API key and revision moved together (the revision labels the server's
        metrics).

        Args:
            port: the server's private port.
        """
        self.call(
            {
                "cmd": "switch",
                "port": port,
                "api_key": self.api_key(),
                "revision": self.config.config_hash(),
            }
        )

    def split(self, port: int, candidate: int, candidate_revision: str, percent: int) -> None:
        """Routes ``percent`` % of requests to the candidate's server, the rest to ``port``.

        Args:
            port: the stable server's private port (serving ``config``).
            candidate: the candidate server's private port.
            candidate_revision: the candidate's config hash.
            percent: the candidate's share, 0-100.
        """
        self.call(
            {
                "cmd": "split",
                "port": port,
                "revision": self.config.config_hash(),
                "candidate": candidate,
                "candidate_revision": candidate_revision,
                "percent": percent,
            }
        )

    def drain(self, port: int) -> None:
        """Waits (bounded by DRAIN_TIMEOUT) until no request is in flight to ``port``.

        Args:
            port: a retired server's private port.
        """
        self.call({"cmd": "drain", "port": port, "timeout": DRAIN_TIMEOUT})

    def drain_quietly(self, port: int | None) -> None:
        """:meth:`drain`, where a relay that cannot answer changes nothing (the server is
        stopped gracefully next either way).

        Args:
            port: a retired server's private port (None: nothing to drain).
        """
        if port is not None:
            with contextlib.suppress(DeploymentError, OSError, ValueError):
                self.drain(port)

    def fold_metrics(self, keep: str | None = None) -> None:
        """Folds the counts of retired direct servers into the front's own (their folders go).

        Args:
            keep: the revision whose server still counts (default: the serving one; a server
                with a gate counts what it takes on the public socket, and may step out of
                the relay's path again).
        """
        if keep is None:
            keep = self.config.config_hash()
        if (self.workdir / METRICS_DIR).is_dir() and self.alive():
            with contextlib.suppress(DeploymentError, OSError, ValueError):
                self.call({"cmd": "fold", "keep": keep}, timeout=10)

    def read_metrics(self, window: float | None) -> dict[str, RevisionMetrics]:
        """Requests, errors and latency per revision, as the relay counted them.

        Args:
            window: seconds (the counts of about the last ``window`` seconds); None: since
                the relay started.

        Returns:
            config hash -> metrics.

        Raises:
            DeploymentError: the front is not running.
        """
        if not self.alive():
            raise DeploymentError(
                f"Deployment '{self.deployment_name}' is not running: no metrics to read.",
                deployment_name=self.deployment_name,
            )
        reply = self.call({"cmd": "metrics", "window": window or 0}, timeout=10)
        return metrics_from_reply(reply, window is not None)


def metrics_from_reply(reply: dict[str, Any], windowed: bool) -> dict[str, RevisionMetrics]:
    """Per-revision metrics from the relay's ``metrics`` reply.

    Args:
        reply: ``{"now": ..., "then": ..., "span": s, "bounds": [...]}`` (relay_metrics).
        windowed: the window between "then" and "now" (else the cumulative "now").

    Returns:
        revision -> metrics.
    """
    bounds = [float(b) for b in reply.get("bounds", [])]
    out: dict[str, RevisionMetrics] = {}
    for rev, counters in dict(reply.get("now", {})).items():
        now = RevisionMetrics.from_counters(rev, counters, bounds)
        if windowed:
            then = reply.get("then", {}).get(rev)
            earlier = RevisionMetrics.from_counters(rev, then, bounds) if then else None
            now = now.since(earlier, float(reply.get("span", 0)) or None)
        out[rev] = now
    return out

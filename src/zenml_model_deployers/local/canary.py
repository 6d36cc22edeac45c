"""Canaries of a local deployment: a candidate revision's server beside the stable one, the
front routing a share of requests to it, and the end of a canary (promotion or rollback).

``LocalProcessService.set_traffic_split`` delegates here. The candidate is not restarted by the
front's supervisor while it is a candidate (a crash shows as refused requests, which fail a
rollout's gates); its supervision spec waits aside until a promotion hands it over.
"""

from __future__ import annotations

from zenml_model_deployers.config import DeploymentConfig
from zenml_model_deployers.errors import ConfigurationError, DeploymentError
from zenml_model_deployers.local.config import LocalDeploymentConfig
from zenml_model_deployers.local.front import DRAIN_TIMEOUT
from zenml_model_deployers.local.launch import make_tree_private
from zenml_model_deployers.local.revisions import OnService, Revisions
from zenml_model_deployers.local.supervision import (
    drop_canary_spec,
    keep_canary_spec,
    promote_canary_spec,
)
from zenml_model_deployers.service import TrafficSplit


class Canary(OnService):
    """The canary of one local deployment (the status's ``canary_*`` fields are the
    candidate's)."""

    def split(self, split: TrafficSplit, timeout: float) -> None:
        """Serves the split's revisions side by side (see
        ``LocalProcessService.route_traffic``).

        Args:
            split: the stable revision, the candidate (None: stable only) and its share.
            timeout: seconds to wait until a new candidate's server is ready.

        A deployment serving on the direct data path by default (``data_path="auto"``) gets
        the relay back into its data path first (``Revisions.step_in``); once the canary ends
        (promotion or rollback) the relay steps out again where the revision that serves then
        is eligible (``Revisions.handoff``).

        Raises:
            ConfigurationError: the deployment or the candidate asks for
                ``data_path="direct"``.
            DeploymentError: the deployment does not serve.
        """
        stable, candidate = split.stable, split.candidate
        svc, status = self.svc, self.status
        if (status.direct and not svc.relay_may_step_in) or getattr(
            candidate, "data_path", "relay"
        ) == "direct":
            raise ConfigurationError(
                f"Deployment '{svc.deployment_name}' asks for the direct data path "
                "(data_path='direct'): requests bypass the front, which can neither split "
                "them between two revisions nor measure them, so no canary or progressive "
                "rollout can run.",
                deployment_name=svc.deployment_name,
                hint="deploy with data_path='auto' (the default: the relay steps into the "
                "data path by itself for a canary or rollout) or 'relay'.",
            )
        front = svc.front
        if status.direct and candidate is not None and front.alive():
            Revisions(svc).step_in(timeout)
        if not front.alive() or status.server_port is None:
            raise DeploymentError(
                f"Deployment '{svc.deployment_name}' is not serving: no traffic to split.",
                deployment_name=svc.deployment_name,
                hint=f"`zmd models start {svc.deployment_name}` first.",
            )
        assert isinstance(stable, LocalDeploymentConfig)
        if candidate is None:
            if stable.config_hash() == svc.config.config_hash():
                self._rollback()
            else:
                self._promote(stable)
            if svc.direct_data_path:
                Revisions(svc).handoff(timeout)
            return
        assert isinstance(candidate, LocalDeploymentConfig)
        if not self._alive(candidate):
            self.end()
            self._start(candidate, timeout)
        assert status.canary_port is not None
        try:
            front.split(
                status.server_port,
                status.canary_port,
                candidate.config_hash(),
                split.candidate_percent,
            )
        except BaseException:
            front.switch(status.server_port)
            self.end()
            raise

    def _alive(self, candidate: DeploymentConfig) -> bool:
        """Whether the candidate's server runs (and is this candidate's)."""
        status = self.status
        running = status.canary_server is not None and status.canary_server.is_alive()
        recorded = status.canary_config
        return (
            running
            and bool(recorded)
            and (type(candidate).model_validate(recorded).config_hash() == candidate.config_hash())
        )

    def _start(self, candidate: LocalDeploymentConfig, timeout: float) -> None:
        """Starts the candidate's server (not yet routed to) in the candidate's environment
        (``candidate_environment``: e.g. the BentoML home its bento is pinned in, not the
        stable revision's); its restart spec is kept aside (0600) until a promotion hands it
        to the supervisor."""
        svc = self.svc
        stable = svc.config
        svc.config = candidate
        try:
            with svc.candidate_environment():
                started = Revisions(svc).start_server(timeout)
        finally:
            svc.config = stable
        keep_canary_spec(svc.workdir, started.spec, svc.front.call)
        self.status.canary_server, self.status.canary_port = started.handle, started.port
        self.status.canary_log_path = str(started.log)
        make_tree_private(svc.workdir)

    def end(self) -> None:
        """Stops the candidate's server (gracefully) and forgets it."""
        status = self.status
        if status.canary_server is not None:
            status.canary_server.terminate(DRAIN_TIMEOUT)
        status.canary_server = None
        status.canary_port = None
        status.canary_log_path = None
        drop_canary_spec(self.svc.workdir)
        self.svc.forget_candidate()

    def _rollback(self) -> None:
        """The stable revision takes all traffic; the candidate is drained and stopped."""
        front = self.svc.front
        assert self.status.server_port is not None
        front.switch(self.status.server_port)
        front.drain_quietly(self.status.canary_port)
        self.end()

    def _promote(self, candidate: LocalDeploymentConfig) -> None:
        """The candidate's server becomes the deployment's; the old one is drained and
        stopped."""
        svc, status = self.svc, self.status
        server, port = status.canary_server, status.canary_port
        if server is None or port is None or not server.is_alive():
            raise DeploymentError(
                f"The candidate revision {candidate.config_hash()} of '{svc.deployment_name}' "
                "is not running: nothing to promote.",
                deployment_name=svc.deployment_name,
                hint=f"`zmd models rollback {svc.deployment_name}`, then deploy it again.",
            )
        old_server, old_port = status.server, status.server_port
        stable = svc.config
        svc.config = candidate  # the switch carries the candidate's revision and API key
        try:
            svc.front.switch(port)
        except BaseException:
            svc.config = stable
            raise
        promote_canary_spec(svc.workdir)
        status.restarts = 0
        status.server, status.server_port = server, port
        status.log_path = status.canary_log_path
        status.canary_server = status.canary_port = None
        status.canary_log_path = None
        if old_port != port:
            svc.front.drain_quietly(old_port)
        if old_server is not None:
            old_server.terminate(DRAIN_TIMEOUT)
        svc.adopt_candidate()  # once the old server is gone: what it needed may go too

"""The conformance suite every flavor (ours and users' custom ones) passes.

Subclass :class:`DeployerConformance` in a pytest module and provide:

- fixture ``deployer``: the flavor's deployer (a registered component or constructed);
- fixture ``stack_with_deployer``: activates a ZenML stack whose model deployer is it;
- :meth:`make_config` for the variants ``"a"`` and ``"b"`` (two models whose predictions on
  :attr:`sample_input` differ: :meth:`expected`) and ``"broken"`` (a model that cannot serve);
- :meth:`assert_nothing_left`: the backend holds nothing for a deleted deployment;
- :meth:`leftovers`: what the backend holds of ours for a deployment name (every kind it
  keeps: resources, secrets, scopes, processes, files), which a refused or failed create must
  leave empty; and :meth:`occupy_name`, how someone else takes a name (or what it needs) so
  that a create is refused (None where nothing can);
- optionally :meth:`assert_secret_delivered`.

The tests run in order on one deployment per class (later steps build on earlier ones),
so a flavor pays for few server starts. Every loop is bounded in count and time.

A failing test raises :class:`ConformanceFailure`, whose message names the hooks at fault and
the guarantee they broke (see :data:`GUARANTEES`), followed by what actually happened.

The suite is a pytest suite: it needs pytest (``pip install "zenml-model-deployers[testing]"``).
What an example needs without pytest, the request loop, is :mod:`.request_loop`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, ParamSpec, TypeVar

import requests

try:
    import pytest
except ModuleNotFoundError as e:  # pragma: no cover - depends on the environment
    raise ModuleNotFoundError(
        f"The conformance suite runs under pytest, which is not installed ({e}). Install it "
        'with the testing extra: pip install "zenml-model-deployers[testing]". (The request '
        "loop alone is zenml_model_deployers.testing.request_loop, which needs no pytest.)",
        name=e.name,
    ) from e

from zenml_model_deployers.config import DeploymentConfig
from zenml_model_deployers.deployer import BaseDeployer
from zenml_model_deployers.errors import DeploymentError
from zenml_model_deployers.service import DeploymentService
from zenml_model_deployers.testing.request_loop import RequestLoop

__all__ = [
    "GUARANTEES",
    "ConformanceFailure",
    "DeployerConformance",
    "LocalProcessConformance",
    "RequestLoop",
    "guarantee",
]

P = ParamSpec("P")
R = TypeVar("R")

# test name -> (the hooks a failure points at, the guarantee they must keep)
GUARANTEES: dict[str, tuple[str, str]] = {}


class ConformanceFailure(AssertionError):
    """A flavor broke a guarantee of the extension API.

    Attributes:
        hooks: the hooks (methods of the flavor's service or deployer) at fault.
        guarantee: the guarantee they broke.
    """

    def __init__(self, hooks: str, guarantee: str, cause: BaseException) -> None:
        """Builds the message: hooks, guarantee, then what happened.

        Args:
            hooks: the hooks at fault.
            guarantee: the guarantee.
            cause: the failed assertion or the exception raised.
        """
        self.hooks, self.guarantee = hooks, guarantee
        what = str(cause).strip()
        if not what:
            # A bare `assert` outside pytest's rewritten test modules has no message: quote
            # the check that failed.
            frames = traceback.extract_tb(cause.__traceback__)
            what = (frames[-1].line or "") if frames else ""
        super().__init__(
            f"{hooks} broke a guarantee: {guarantee}\n"
            f"  what happened: {type(cause).__name__}: {what}"
        )


def guarantee(hooks: str, text: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Marks a conformance test with the guarantee it checks; a failure names both.

    Args:
        hooks: the hooks at fault when it fails, e.g. "stop_backend / start_backend".
        text: the guarantee, as the hooks' docstrings state it.

    Returns:
        A decorator.
    """

    def wrap(test: Callable[P, R]) -> Callable[P, R]:
        GUARANTEES[test.__name__] = (hooks, text)

        @functools.wraps(test)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return test(*args, **kwargs)
            except ConformanceFailure:
                raise
            except Exception as e:  # pytest.skip is no Exception: it passes through
                raise ConformanceFailure(hooks, text, e) from e

        return run

    return wrap


class DeployerConformance:
    """The suite. See the module docstring for what a subclass provides."""

    timeout: ClassVar[float] = 120.0
    sample_input: ClassVar[Any] = None
    # Requests the client loop must complete during an update (fewer for slow models: LLMs).
    update_min_requests: ClassVar[int] = 10
    name_prefix: ClassVar[str] = "conf"
    # Seconds a create refused by a name someone else holds may take (it makes nothing).
    refusal_within: ClassVar[float] = 10.0

    # ----------------------------------------------------------------- what a flavor provides
    def make_config(self, variant: str, name: str, **overrides: Any) -> DeploymentConfig:
        """A config of the flavor for variant "a", "b" or "broken"."""
        raise NotImplementedError

    def expected(self, variant: str) -> Any:
        """What predict(sample_input) returns for variant "a" or "b"."""
        raise NotImplementedError

    def assert_nothing_left(self, service: DeploymentService) -> None:
        """Asserts the backend holds nothing for this (deleted) deployment."""
        raise NotImplementedError

    def assert_secret_delivered(self, service: DeploymentService, value: str) -> None:
        """Asserts the serving side received the resolved secret (optional)."""

    def backend_writes(self) -> int | None:
        """How many writes the backend has received so far (None: the flavor cannot count).

        Counted before and after an unchanged redeploy, which must write nothing.
        """
        return None

    def assert_url_gone(self, service: DeploymentService, url: str) -> None:
        """Asserts a deleted deployment's URL serves nothing (default: nothing listens).

        A flavor behind a shared ingress (Seldon's mesh, KServe's gateway) overrides it: the
        ingress stays and answers that the model is unknown.
        """
        with pytest.raises(requests.RequestException):
            requests.post(url, json={}, timeout=3)

    def secret_overrides(self, ref: str) -> dict[str, Any]:
        """Config overrides that make the deployment use a secret reference."""
        return {"env": {"ZMD_CONFORMANCE_TOKEN": ref}}

    def leftovers(self, deployer: BaseDeployer, name: str) -> list[str]:
        """Everything of ours the backend holds for deployment ``name``, one ``kind/name`` each
        (its resources, secrets and secret scopes, service accounts, processes, files), except
        what :meth:`occupy_name` planted and what a failed create keeps on purpose (a failed
        revision's log that its error names).

        A refused or failed create must leave this empty. Every flavor supplies it.
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not say what the backend holds of ours: implement "
            "leftovers(deployer, name) (list every object kind your backend keeps for a "
            "deployment, secrets included)."
        )

    def occupy_name(self, name: str) -> tuple[dict[str, Any], Callable[[], None]] | None:
        """Makes a create of deployment ``name`` be refused: someone else holds the name (an
        object of theirs, serving) or what the deployment needs (a local server's port).

        Returns:
            (config overrides the refused create uses, a function that frees what was taken),
            or None: nothing on this backend can refuse a create (the check is skipped).
        """
        return None

    # ----------------------------------------------------------------- shared state
    @pytest.fixture(scope="class")
    def state(self) -> dict[str, Any]:
        """State passed from one ordered test to the next."""
        return {"name": f"{self.name_prefix}-{uuid.uuid4().hex[:6]}"}

    def _need(self, state: dict[str, Any], key: str) -> Any:
        if key not in state:
            pytest.skip(f"an earlier conformance step did not produce {key!r}")
        return state[key]

    def _predict(self, service: DeploymentService) -> Any:
        return service.predict(self.sample_input)

    # ----------------------------------------------------------------- the suite, in order
    @guarantee(
        "provision_revision / format_request / parse_response",
        "deploy returns only once the new deployment serves the model at its URL",
    )
    def test_01_deploy_serves(self, deployer: BaseDeployer, state: dict[str, Any]) -> None:
        """A new deployment serves the model at its URL."""
        svc = deployer.deploy(self.make_config("a", state["name"]), timeout=self.timeout)
        assert svc.status.state.value == "active"
        assert svc.prediction_url
        assert self._predict(svc) == self.expected("a")
        state["svc"] = svc
        state["url"] = svc.prediction_url

    @guarantee(
        "the config's serving fields (config_hash)",
        "deploying the same config again returns the running deployment untouched: no restart, no backend write",
    )
    def test_02_idempotent_redeploy(self, deployer: BaseDeployer, state: dict[str, Any]) -> None:
        """The same config again returns the running deployment untouched."""
        first = self._need(state, "svc")
        writes = self.backend_writes()
        t0 = time.monotonic()
        again = deployer.deploy(self.make_config("a", state["name"]), timeout=self.timeout)
        assert time.monotonic() - t0 < 10, "an unchanged redeploy must not restart anything"
        assert self.backend_writes() == writes, "an unchanged redeploy must write nothing"
        assert again.uuid == first.uuid
        assert again.status.revision == first.status.revision
        assert again.prediction_url == state["url"]

    @guarantee(
        "provision_revision",
        "an update keeps the old revision serving until the new one is ready: zero failed requests, same URL, new model after",
    )
    def test_03_update_keeps_serving(self, deployer: BaseDeployer, state: dict[str, Any]) -> None:
        """An update to another model: zero failed requests on the URL, new model served after."""
        svc = self._need(state, "svc")
        headers, body = svc.format_request(self.sample_input)
        with RequestLoop(state["url"], body, headers) as loop:
            time.sleep(0.3)
            new = deployer.deploy(self.make_config("b", state["name"]), timeout=self.timeout)
            time.sleep(0.5)
        assert loop.failures == [], f"{len(loop.failures)} failed requests: {loop.failures[:3]}"
        assert loop.ok > self.update_min_requests
        assert new.prediction_url == state["url"]
        assert new.status.revision == svc.status.revision + 1
        assert self._predict(new) == self.expected("b")
        state["svc"] = new

    @guarantee(
        "provision_revision",
        "a failed update raises DeploymentError, tears the new revision down, and the old one keeps serving and stays recorded",
    )
    def test_04_failed_update_rolls_back(
        self, deployer: BaseDeployer, state: dict[str, Any]
    ) -> None:
        """A model that cannot serve: typed error, old revision keeps serving and stays recorded."""
        svc = self._need(state, "svc")
        headers, body = svc.format_request(self.sample_input)
        with RequestLoop(state["url"], body, headers) as loop:
            with pytest.raises(DeploymentError) as err:
                deployer.deploy(self.make_config("broken", state["name"]), timeout=self.timeout)
        assert str(err.value).strip()
        assert loop.failures == [], f"{len(loop.failures)} failed requests: {loop.failures[:3]}"
        recorded = deployer.find_deployment(state["name"])
        assert recorded is not None
        assert recorded.status.config_hash == svc.status.config_hash
        assert recorded.status.state.value == "active"
        assert self._predict(recorded) == self.expected("b")

    @guarantee(
        "stop_backend / start_backend / check_status",
        "stop stops serving and is reversible; start brings the recorded revision back on the same URL",
    )
    def test_05_stop_start_same_url(self, deployer: BaseDeployer, state: dict[str, Any]) -> None:
        """Stop is reversible; start brings the recorded revision back on the same URL."""
        svc = self._need(state, "svc")
        deployer.stop(svc)
        stopped = deployer.find_deployment(state["name"])
        assert stopped is not None and stopped.status.state.value != "active"
        with pytest.raises(DeploymentError):
            stopped.predict(self.sample_input, timeout=5)
        deployer.start(stopped, self.timeout)
        again = deployer.find_deployment(state["name"])
        assert again is not None and again.status.state.value == "active"
        assert again.prediction_url == state["url"]
        assert self._predict(again) == self.expected("b")
        state["svc"] = again

    @guarantee(
        "SERVICE_TYPE / FLAVOR",
        "ZenML's own model deployer API finds the service with its URL and labels",
    )
    def test_06_zenml_sees_it(self, deployer: BaseDeployer, state: dict[str, Any]) -> None:
        """ZenML's own model deployer API finds the service, with its URL and labels."""
        svc = self._need(state, "svc")
        found = deployer.find_model_server(service_uuid=svc.uuid)
        assert len(found) == 1
        assert found[0].get_prediction_url() == state["url"]
        from zenml.client import Client

        row = Client().get_service(svc.uuid)
        assert row.labels and row.labels["zmd_deployment"] == state["name"]
        info = deployer.get_model_server_info(found[0])
        assert info["PREDICTION_URL"] == state["url"]

    @guarantee(
        "delete_backend",
        "delete removes everything the backend holds and the service row; the URL serves nothing after",
    )
    def test_07_delete_leaves_nothing(self, deployer: BaseDeployer, state: dict[str, Any]) -> None:
        """Delete removes the backend's deployment and the service row."""
        svc = self._need(state, "svc")
        deployer.delete(svc)
        assert deployer.find_deployment(state["name"]) is None
        self.assert_nothing_left(svc)
        self.assert_url_gone(svc, state["url"])

    @guarantee(
        "provision_revision / check_status",
        "a first deploy of a model that cannot serve raises DeploymentError with the backend's own message and leaves nothing",
    )
    def test_08_bad_model_leaves_nothing(
        self, deployer: BaseDeployer, state: dict[str, Any]
    ) -> None:
        """A first deploy (with a secret) of a model that cannot serve: typed error, no row,
        nothing of ours on the backend (:meth:`leftovers`)."""
        name = state["name"] + "-bad"
        with self._planted_secret() as secret:
            with pytest.raises(DeploymentError) as err:
                deployer.deploy(self.make_config("broken", name, **secret), timeout=self.timeout)
        assert deployer.find_deployment(name) is None
        assert err.value.backend_message, "the backend's own message must be in the error"
        left = self.leftovers(deployer, name)
        assert left == [], f"a failed create left these behind: {left}"

    @guarantee(
        "provision_revision / discard_backend",
        "a create refused because someone else holds the name (or what it needs) raises DeploymentError fast, leaves theirs untouched and nothing of ours",
    )
    def test_08b_refused_create_leaves_nothing(
        self, deployer: BaseDeployer, state: dict[str, Any]
    ) -> None:
        """A name someone else holds: a typed refusal within :attr:`refusal_within` seconds,
        no row, nothing of ours on the backend (secrets included)."""
        name = state["name"] + "-ref"
        taken = self.occupy_name(name)
        if taken is None:
            pytest.skip(f"{type(self).__name__}: nothing can refuse a create on this backend")
        overrides, release = taken
        try:
            with self._planted_secret() as secret:
                t0 = time.monotonic()
                with pytest.raises(DeploymentError):
                    deployer.deploy(
                        self.make_config("a", name, **{**overrides, **secret}),
                        timeout=self.timeout,
                    )
                took = time.monotonic() - t0
            assert deployer.find_deployment(name) is None
            left = self.leftovers(deployer, name)
            assert left == [], f"a refused create left these behind: {left}"
            assert took < self.refusal_within, f"the refusal took {took:.1f} s"
        finally:
            release()

    @contextlib.contextmanager
    def _planted_secret(self) -> Iterator[dict[str, Any]]:
        """A ZenML secret for the duration; yields the config overrides that use it."""
        from zenml.client import Client

        name = f"zmdconf{uuid.uuid4().hex[:6]}"
        Client().create_secret(name=name, values={"token": f"zmd-planted-{uuid.uuid4().hex}"})
        try:
            yield self.secret_overrides("{{" + name + ".token}}")
        finally:
            Client().delete_secret(name)

    @guarantee(
        "the config and service classes (importable, serialisable)",
        "a pipeline deploy records deployed_model_url and the full service artifact, which loads after the row is gone and recreates the same revision",
    )
    def test_09_pipeline_metadata_artifact_recreate(
        self, deployer: BaseDeployer, stack_with_deployer: Any, state: dict[str, Any]
    ) -> None:
        """A pipeline deploy records `deployed_model_url` + `deployment` metadata and the full
        service artifact; after the service row is gone the artifact still loads (detached) and
        recreate brings the same serving conditions back."""
        from zenml import pipeline
        from zenml.client import Client

        from zenml_model_deployers.steps import model_deployer_step, recreate_deployment_step

        name = state["name"] + "-pl"
        cfg = self.make_config("a", name)
        settings = {
            k: v
            for k, v in cfg.serving_fields().items()
            if k not in ("deployment_name", "model_uri", "type")
        }

        @pipeline(enable_cache=False)
        def conformance_deploy() -> None:
            model_deployer_step(
                model_uri=cfg.model_uri,
                deployment_name=name,
                timeout=self.timeout,
                settings=settings,
            )

        first = conformance_deploy.with_options(run_name=f"conformance-{name}")()
        assert first is not None
        run = Client().get_pipeline_run(first.id)
        assert run.status.value == "completed"
        step = run.steps["model_deployer_step"]
        url = step.run_metadata["deployed_model_url"]
        desc = step.run_metadata["deployment"]
        assert isinstance(url, str) and url.startswith("http")
        assert isinstance(desc, dict) and desc["name"] == name and desc["state"] == "running"
        svc = step.outputs["deployment"][0].load()
        assert svc.prediction_url == url and not svc.is_detached
        assert self._predict(svc) == self.expected("a")
        # The row goes away (e.g. deleted by hand); the artifact still describes everything.
        deployer.delete(svc)
        detached = (
            Client()
            .get_pipeline_run(run.id)
            .steps["model_deployer_step"]
            .outputs["deployment"][0]
            .load()
        )
        assert detached.is_detached
        assert detached.config.config_hash() == svc.config.config_hash()

        artifact = (
            Client().get_pipeline_run(run.id).steps["model_deployer_step"].outputs["deployment"][0]
        )

        @pipeline(enable_cache=False)
        def conformance_recreate() -> None:
            recreate_deployment_step(service=artifact, timeout=self.timeout)

        run2 = conformance_recreate.with_options(run_name=f"conformance-{name}-re")()
        assert run2 is not None
        back = deployer.find_deployment(name)
        assert back is not None and back.status.state.value == "active"
        assert back.status.config_hash == svc.status.config_hash
        assert self._predict(back) == self.expected("a")
        rec = Client().get_pipeline_run(run2.id).steps["recreate_deployment_step"]
        assert rec.run_metadata["deployed_model_url"] == back.prediction_url
        deployer.delete(back)

    @guarantee(
        "server_env / secret_overrides",
        "a secret reference reaches the backend resolved and never the store, artifact, metadata, logs, errors or a local file",
    )
    def test_10_secrets_never_leak(self, deployer: BaseDeployer, state: dict[str, Any]) -> None:
        """A secret reference reaches the backend resolved, and never the store, the artifact,
        the metadata, the logs or an error message."""
        from zenml.client import Client

        from zenml_model_deployers.materializer import service_to_json

        value = f"zmd-planted-{uuid.uuid4().hex}"
        secret_name = f"zmdconf{uuid.uuid4().hex[:6]}"
        Client().create_secret(name=secret_name, values={"token": value})
        ref = "{{" + secret_name + ".token}}"
        name = state["name"] + "-sec"
        svc = deployer.deploy(
            self.make_config("a", name, **self.secret_overrides(ref)), timeout=self.timeout
        )
        try:
            self.assert_secret_delivered(svc, value)
            row = Client().get_service(svc.uuid)
            haystacks = {
                "service store": row.model_dump_json(),
                "artifact": json.dumps(service_to_json(svc)),
                "metadata": json.dumps(svc.describe()),
                "logs": "\n".join(svc.get_logs()),
            }
            with pytest.raises(DeploymentError) as err:
                deployer.deploy(
                    self.make_config("broken", name + "-x", **self.secret_overrides(ref)),
                    timeout=self.timeout,
                )
            haystacks["error"] = str(err.value)
            for where, text in haystacks.items():
                assert value not in text, f"the secret leaked into the {where}"
        finally:
            deployer.delete(svc)


class LocalProcessConformance(DeployerConformance):
    """The suite for flavors built on ``local.service.LocalProcessService`` (MLflow, BentoML, or
    a user's own local server): what "nothing left" and "secret delivered" mean for them."""

    def assert_nothing_left(self, service: DeploymentService) -> None:
        """No server or relay process runs, and the deployment's directory is gone.

        Args:
            service: the deleted service.
        """
        from zenml_model_deployers.local.service import LocalProcessService

        assert isinstance(service, LocalProcessService)
        for handle in (service.status.server, service.status.relay):
            assert handle is None or not handle.is_alive()
        assert not service.workdir.exists()

    def leftovers(self, deployer: BaseDeployer, name: str) -> list[str]:
        """The deployment directory's files (but the failed revisions' logs, which the error
        names) and every process started in it or naming it on its command line.

        Args:
            deployer: the flavor's deployer.
            name: the deployment name.

        Returns:
            ``file/<path>`` and ``process/<pid> <command>`` entries.
        """
        import psutil

        from zenml_model_deployers.local.config import zmd_home

        workdir = zmd_home() / "local" / deployer.SERVICE_CLASS.FLAVOR / name
        left = [
            f"file/{p.relative_to(workdir)}"
            for p in (sorted(workdir.iterdir()) if workdir.is_dir() else [])
            if p.name != "failed"
        ]
        for proc in psutil.process_iter(["pid", "cmdline", "cwd"]):
            cmdline = " ".join(proc.info["cmdline"] or [])
            cwd = proc.info["cwd"] or ""
            if str(workdir) in cmdline or cwd == str(workdir) or cwd.startswith(f"{workdir}/"):
                left.append(f"process/{proc.info['pid']} {cmdline[:120]}")
        return left

    def occupy_name(self, name: str) -> tuple[dict[str, Any], Callable[[], None]] | None:
        """Another program listens on the port the deployment pins.

        Args:
            name: the deployment name.

        Returns:
            ({"port": the taken port}, close the socket).
        """
        import socket

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        return {"port": sock.getsockname()[1]}, sock.close

    def assert_secret_delivered(self, service: DeploymentService, value: str) -> None:
        """The server process received the resolved value in its environment, and no file in
        the deployment's directory holds it (the restart spec names the variable only: the
        front keeps its value in memory).

        Args:
            service: the running service.
            value: the secret's value.
        """
        import psutil

        from zenml_model_deployers.local.service import LocalProcessService

        assert isinstance(service, LocalProcessService) and service.status.server is not None
        env = psutil.Process(service.status.server.pid).environ()
        assert env.get("ZMD_CONFORMANCE_TOKEN") == value
        for path in service.workdir.rglob("*"):
            # Model weights aside (bounded): the runtime's own files are small.
            if path.is_file() and not path.is_symlink() and path.stat().st_size < 64 << 20:
                assert value.encode() not in path.read_bytes(), f"the secret is at rest in {path}"
